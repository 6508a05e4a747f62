"""Build `dvc_plots.html`: DVC's page template with vega, vega-lite and vega-embed inline, so that
`dvc plots show` renders with no network (DVC's own template loads them from a CDN: a blank page
offline). `.dvc/config` names it (`plots.html_template`). Rebuild after updating the libraries:

    (cd /tmp/vega && npm pack vega@5 vega-lite@5 vega-embed@6 && for f in *.tgz; do tar xzf "$f" --one-top-level; done)
    python vendor/vega/build_template.py vendor/vega /tmp/vega   # from the repository root
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

LIBRARIES = ("vega", "vega-lite", "vega-embed")  # in load order: vega-embed needs the other two
PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>transferlab: DVC plots</title>
{scripts}
    <style>
        body {{ font-family: sans-serif; }}
        table {{ border-spacing: 15px; }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def script(package: Path, name: str) -> str:
    """One library, inline, with its version and licence named (LICENSE.<name> beside this file)."""
    meta = json.loads((package / "package.json").read_text())
    code = (package / "build" / f"{name}.min.js").read_text()
    if "</script" in code.lower() or "{plot_divs}" in code or "{scripts}" in code:
        raise SystemExit(f"{name}: its code would end the <script> element or fill a DVC placeholder")
    return f"    <!-- {name} {meta['version']}, {meta['license']} (LICENSE.{name}) -->\n    <script>{code}</script>"


def main(out_dir: str, packs: str) -> None:
    packages = {name: next(Path(packs).glob(f"{name}-[0-9]*/package")) for name in LIBRARIES}
    page = PAGE.format(scripts="\n".join(script(packages[name], name) for name in LIBRARIES))
    (Path(out_dir) / "dvc_plots.html").write_text(page)


if __name__ == "__main__":
    main(*sys.argv[1:3])
