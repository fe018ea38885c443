"""Model card: what produced a job's model (issue 9)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

JSON_TYPE = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


# plain ALTER TABLE on both databases (SQLite >= 3.35 drops columns): no batch copy of `jobs`,
# whose rows other tables reference


def upgrade() -> None:
    op.add_column('jobs', sa.Column('model_card', JSON_TYPE, nullable=True))


def downgrade() -> None:
    op.drop_column('jobs', 'model_card')
