"""Known vulnerabilities of the installed, pinned packages: ``make audit`` (part of ``make lint``).

Runs pip-audit over the exact versions installed in the running environment (``.venv``: what
``requirements-dev.txt`` resolved to, the image's runtime packages included), one pinned line per
distribution, against pip-audit's default vulnerability service (PyPI's advisory data, the
per-release JSON API). Fails on every known vulnerability that ``.ci/audit-accepted.txt`` does not
accept with a reason: PyPI's advisories carry no severity, so "critical only" cannot be told
apart and the gate is stricter than that.

When the service cannot be reached (every package comes back "not found", as on a machine that
reaches only a package mirror), nothing was audited: that is said loudly, and it fails under CI
(``CI=true``) while a local ``make lint`` goes on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ACCEPTED = ROOT / ".ci" / "audit-accepted.txt"


def pinned() -> list[str]:
    """``name==version`` of every installed distribution, sorted (duplicates once)."""
    seen = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            seen.setdefault(name.lower(), f"{name}=={dist.version}")
    return sorted(seen.values())


def accepted() -> dict[str, str]:
    """Vulnerability id -> why it is accepted (``ID  reason`` lines, ``#`` comments)."""
    out = {}
    if ACCEPTED.exists():
        for line in ACCEPTED.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                vuln, _, reason = line.partition(" ")
                out[vuln] = reason.strip()
    return out


def audit(requirements: list[str], ignore: dict[str, str]) -> dict:
    """pip-audit's JSON report of ``requirements`` (no resolution: the versions are the installed ones)."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write("\n".join(requirements) + "\n")
    try:
        cmd = [sys.executable, "-m", "pip_audit", "-r", fh.name, "--no-deps", "--disable-pip", "--format", "json",
               "--progress-spinner", "off"]  # fmt: skip
        for vuln in ignore:
            cmd += ["--ignore-vuln", vuln]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    finally:
        os.unlink(fh.name)
    if not proc.stdout.strip():
        raise RuntimeError(f"pip-audit failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    report: dict = json.loads(proc.stdout)
    return report


def verdict(report: dict, ci: bool) -> tuple[int, list[str]]:
    """(exit code, lines to print) for a pip-audit JSON report."""
    deps = report.get("dependencies", [])
    skipped = [d for d in deps if d.get("skip_reason")]
    found = [(d["name"], d["version"], v) for d in deps for v in d.get("vulns", [])]
    lines = [f"audit: {len(deps)} packages, {len(deps) - len(skipped)} audited, {len(found)} known vulnerabilities"]
    for name, version, v in found:
        fixed = ", ".join(v.get("fix_versions") or []) or "no fixed release"
        lines.append(f"  {name} {version}: {v['id']} ({', '.join(v.get('aliases') or [])}) fixed in {fixed}")
    if found:
        lines.append(f"fix: upgrade the pins, or accept an id with a dated reason in {ACCEPTED.relative_to(ROOT)}")
        return 1, lines
    if deps and len(skipped) == len(deps):
        lines.append(
            "NOT AUDITED: the vulnerability service answered for no package (unreachable from here: "
            f"{skipped[0]['skip_reason']})"
            + ("; failing under CI" if ci else "; run `make audit` where it is reachable")
        )
        return (1 if ci else 0), lines
    if skipped:
        lines.append("not audited (not on PyPI): " + ", ".join(f"{d['name']} {d['version']}" for d in skipped))
    return 0, lines


def main() -> int:
    code, lines = verdict(audit(pinned(), accepted()), ci=os.environ.get("CI", "").lower() == "true")
    print("\n".join(lines))
    return code


if __name__ == "__main__":
    sys.exit(main())
