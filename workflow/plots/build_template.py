"""Build workflow/plots/offline.html: the `dvc plots show` page with Vega inlined (no CDN, renders offline).

DVC's default page loads vega, vega-lite and vega-embed from cdn.jsdelivr.net and is blank offline.
This template (set as `plots.html_template` in .dvc/config) has no `{scripts}` placeholder, so DVC adds
no CDN tags, and carries the three libraries itself, taken from their npm packages at the versions
dvc-render targets, each tarball checked against its pinned npm integrity (sha512) before use.
Their licence texts are copied to workflow/plots/licenses/ (all BSD-3-Clause; see README credits).

    python workflow/plots/build_template.py      # needs `npm` and the npm registry; rewrites the files
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# package -> (version, npm integrity, file inside the tarball)
PACKAGES = {
    "vega": ("5.20.2", "sha512-qmH7aD9GGPpssVdxL1xgcdxTbQzyRUeRR16Os385ymvQhiwCYQNA6+eXUPAZDTVLfk0RXu6Jzj6kUE5jQ80EVw==",
             "package/build/vega.min.js"),
    "vega-lite": ("5.2.0", "sha512-Yxcg8MvYfxHcG6BbkaKT0oVCIMIcE19UvqIsEwBmyd/7h2nzW7oRnID81T8UrY7hpDrIr6wa2JADOT2dhGNErw==",
                  "package/build/vega-lite.min.js"),
    "vega-embed": ("6.18.2", "sha512-wcDyQPE4J5aiCDc3/suH5RQDvrKkjuLkhzUcbOLwEkNF8/+pp17tS0JghzEvAPNRg+5aG1/N2ydixq8Lk3dOlg==",
                   "package/build/vega-embed.min.js"),
}
PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>ipfacediff plots</title>
    <!-- vega {vega}, vega-lite {vega_lite}, vega-embed {vega_embed} (BSD-3-Clause, (c) the Vega project / University
         of Washington Interactive Data Lab), inlined from their npm packages by workflow/plots/build_template.py -->
{inline_scripts}
    <style>table {{ border-spacing: 15px; }} body {{ font-family: sans-serif; }}</style>
</head>
<body>
    <p>Plots of the last run (profile and caveats in reports/tables/tables.md). A panel that is empty says why
    in its PNG twin (e.g. identity_over_time.png: no edited frame had a detectable face).</p>
    {plot_divs}
</body>
</html>
"""


def npm_file(package: str, version: str, integrity: str, member: str, work: Path) -> tuple[str, str]:
    """(the member's text, the package's LICENSE text) from the integrity-checked npm tarball."""
    out = subprocess.run(["npm", "pack", f"{package}@{version}", "--silent"], cwd=work, capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    tarball = work / out
    digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    if digest != integrity:
        sys.exit(f"{tarball}: integrity {digest} does not match the pinned {integrity}")
    with tarfile.open(tarball) as tar:
        text = tar.extractfile(member).read().decode("utf-8")
        license_text = tar.extractfile("package/LICENSE").read().decode("utf-8")
    return text, license_text


def main() -> int:
    scripts, versions = [], {}
    (HERE / "licenses").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for package, (version, integrity, member) in PACKAGES.items():
            js, lic = npm_file(package, version, integrity, member, Path(tmp))
            if "</script" in js:
                sys.exit(f"{package}: the bundle contains '</script' and cannot be inlined")
            scripts.append(f"    <script>/* {package}@{version} */\n{js}\n    </script>")
            (HERE / "licenses" / f"{package}-LICENSE.txt").write_text(lic)
            versions[package.replace("-", "_")] = version
    page = PAGE
    for key, value in versions.items():
        page = page.replace("{" + key + "}", value)
    page = page.replace("{{", "{").replace("}}", "}")  # CSS braces; before the scripts go in, which have their own
    page = page.replace("{inline_scripts}", "\n".join(scripts))
    (HERE / "offline.html").write_text(page)
    print(f"wrote {HERE / 'offline.html'} ({len(page) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
