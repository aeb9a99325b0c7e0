"""`make audit`'s verdict on pip-audit reports (dev/audit_deps.py): what fails, what only warns."""

from __future__ import annotations

from dev.audit_deps import pinned, verdict

VULN = {"id": "PYSEC-2099-1", "aliases": ["CVE-2099-1"], "fix_versions": ["2.0.1"]}


def test_a_known_vulnerability_fails() -> None:
    report = {
        "dependencies": [{"name": "x", "version": "2.0.0", "vulns": [VULN]}, {"name": "y", "version": "1", "vulns": []}]
    }
    code, lines = verdict(report, ci=False)
    assert code == 1
    assert "x 2.0.0: PYSEC-2099-1 (CVE-2099-1) fixed in 2.0.1" in lines[1]


def test_an_unreachable_service_warns_locally_and_fails_under_ci() -> None:
    reason = "Dependency not found on PyPI and could not be audited: x (2.0.0)"
    report = {"dependencies": [{"name": "x", "version": "2.0.0", "skip_reason": reason}]}
    assert verdict(report, ci=False)[0] == 0
    code, lines = verdict(report, ci=True)
    assert code == 1 and lines[-1].startswith("NOT AUDITED")


def test_a_clean_report_passes_naming_what_was_not_audited() -> None:
    report = {
        "dependencies": [
            {"name": "x", "version": "1", "vulns": []},
            {"name": "ours", "version": "0", "skip_reason": "not on PyPI"},
        ]
    }
    code, lines = verdict(report, ci=True)
    assert code == 0 and lines[0] == "audit: 2 packages, 1 audited, 0 known vulnerabilities"
    assert lines[-1] == "not audited (not on PyPI): ours 0"


def test_every_installed_distribution_is_pinned_once() -> None:
    lines = pinned()
    assert any(line.startswith("pip_audit==") or line.lower().startswith("pip-audit==") for line in lines)
    assert len({line.split("==")[0].lower() for line in lines}) == len(lines)
