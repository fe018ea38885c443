"""The dashboard's static files (HTML, CSS, JS and the vendored uPlot), served by service.api.dashboard."""
from pathlib import Path

WEB_DIR = Path(__file__).resolve().parent
