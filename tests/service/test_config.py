"""Settings: validators, and README's configuration table naming every setting."""
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_documents_every_setting():
    text = README.read_text()
    missing = [name.upper() for name in Settings.model_fields if f"| `{name.upper()}` |" not in text]
    assert not missing, f"README's configuration table lacks {missing}"


def test_postgresql_urls_use_the_psycopg3_driver():
    settings = Settings(database_url="postgresql://u@h:5432/db")
    assert settings.database_url == "postgresql+psycopg://u@h:5432/db"
    assert not settings.is_sqlite


def test_unknown_database_is_refused_naming_the_field():
    with pytest.raises(ValidationError, match="database_url"):
        Settings(database_url="mysql://u@h/db")


@pytest.mark.parametrize("field, value", [("max_header_bytes", 512), ("max_header_bytes", 2 * 1024 * 1024),
                                          ("max_header_count", 0), ("max_header_count", 100_000)])
def test_header_caps_are_bounded(field, value):
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})
