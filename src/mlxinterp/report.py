"""A self-contained HTML report: sections of text, tables and figures embedded as PNG.

The page needs no network: figures are ``data:`` URIs. A small inline script checks on load
that every image decoded and records the outcome in the page title (``report-ok:N`` or
``report-error:...``), which the browser test reads.

Example:
    >>> r = Report("demo")
    >>> r.section("Hello", "<p>text</p>")
    >>> "<h2>Hello</h2>" in r.html()
    True
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Report", "figure_to_data_uri"]

_STYLE = """
body { font-family: -apple-system, Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1000px; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 2em; color: #224; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
code, pre { background: #f4f4f4; padding: 1px 4px; }
.note { color: #666; font-size: 0.9em; }
"""

_CHECK = """
<script>
window.addEventListener('error', function (e) { document.title = 'report-error:' + e.message; });
window.addEventListener('load', function () {
  var imgs = document.images, bad = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (!imgs[i].complete || imgs[i].naturalWidth === 0) bad++;
  }
  if (document.title.indexOf('report-error') !== 0) {
    document.title = bad ? 'report-error:' + bad + ' images missing' : 'report-ok:' + imgs.length;
  }
});
</script>
"""


def figure_to_data_uri(fig: Any, dpi: int = 110) -> str:
    """A matplotlib figure as a ``data:image/png;base64,...`` URI (the figure is closed).

    Example:
        >>> import matplotlib.pyplot as plt
        >>> fig, ax = plt.subplots(figsize=(1, 1))
        >>> figure_to_data_uri(fig, dpi=20).startswith("data:image/png;base64,")
        True
    """
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@dataclass
class Report:
    """Collects sections; `html` renders them, `save` writes the file.

    Example:
        >>> r = Report("Results")
        >>> r.section("Accuracy", r.table(["task", "top-1"], [["facts", 0.98]]))
        >>> "<td>facts</td><td>0.98</td>" in r.html()
        True
    """

    title: str
    sections: list[str] = field(default_factory=list)

    def section(self, heading: str, body_html: str = "") -> None:
        self.sections.append(f"<h2>{html.escape(heading)}</h2>\n{body_html}")

    def text(self, text: str) -> str:
        return f"<p>{html.escape(text)}</p>"

    def figure(self, fig: Any, caption: str = "") -> str:
        cap = f"<div class='note'>{html.escape(caption)}</div>" if caption else ""
        return f"<img alt='{html.escape(caption)}' src='{figure_to_data_uri(fig)}'>{cap}"

    def table(self, header: list[str], rows: list[list[Any]]) -> str:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
            for row in rows
        )
        return f"<table><tr>{head}</tr>{body}</table>"

    def html(self) -> str:
        return (
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style>{_CHECK}</head>"
            f"<body><h1>{html.escape(self.title)}</h1>\n"
            + "\n".join(self.sections)
            + "</body></html>"
        )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.html(), encoding="utf-8")
        return path
