"""csdeploy's JUnit reports validate against the Jenkins xunit plugin's
junit-10.xsd, the schema CI systems' JUnit readers are written against.
scripts/test puts the schema (MIT, shipped in pytest's sdist on PyPI) in
target/schemas and xmlschema in target/lint-venv."""
import json
import os
import subprocess
import xml.etree.ElementTree as ET

import pytest

from conftest import REPO, csdeploy_binary

SCHEMA = os.path.join(REPO, "target", "schemas", "junit-10.xsd")
PYTHON = os.path.join(REPO, "target", "lint-venv", "bin", "python")
VALIDATE = """
import sys, xmlschema
schema = xmlschema.XMLSchema(sys.argv[1])
errors = list(schema.iter_errors(sys.argv[2]))
for e in errors[:5]:
    print("%s at %s" % (e.reason, e.path))
sys.exit(1 if errors else 0)
"""


def validator():
    if os.access(PYTHON, os.X_OK) and os.path.isfile(SCHEMA):
        return PYTHON
    if os.environ.get("CI"):
        pytest.fail("xmlschema or junit-10.xsd is missing: scripts/test installs them under target/")
    pytest.skip("xmlschema or junit-10.xsd is missing (scripts/test installs them under target/)")


def validate(path):
    return subprocess.run([validator(), "-c", VALIDATE, SCHEMA, str(path)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)


def csdeploy(tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLAUDE", "CSDEPLOY_"))}
    env["HOME"] = str(tmp_path / "controller")
    os.makedirs(env["HOME"], exist_ok=True)
    report = tmp_path / ("report-%s.xml" % args[0])
    proc = subprocess.run([csdeploy_binary()] + list(args) + ["--format", "junit", "--output", str(report)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    assert report.exists(), proc.stderr.decode()
    return proc.returncode, report


@pytest.fixture
def inventory(tmp_path):
    """A local host that works and one that cannot be reached."""
    home = tmp_path / "home"
    home.mkdir()
    path = tmp_path / "inventory.yml"
    path.write_text("all:\n  hosts:\n    local:\n      ansible_connection: local\n"
                    "      environment:\n        HOME: %s\n"
                    "    gone:\n      ansible_host: 127.0.0.1\n      ansible_port: 1\n" % json.dumps(str(home)))
    return str(path)


def test_push_verify_with_an_unreachable_host_is_valid_junit(tmp_path, inventory):
    code, report = csdeploy(tmp_path, "push", "--verify", "-i", inventory)
    assert code == 3
    proc = validate(report)
    assert proc.returncode == 0, proc.stdout.decode()
    root = ET.parse(str(report)).getroot()
    gone = [s for s in root.iter("testsuite") if s.get("name") == "gone"]
    assert gone and gone[0].find("testcase/error") is not None, ET.tostring(root)[:400]
    assert all(case.get("time") for case in root.iter("testcase"))


def test_a_failed_verification_and_a_failed_task_are_valid_junit(tmp_path, inventory):
    # verify before any push: checks fail on the local host.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    code, report = csdeploy(fresh, "verify", "-i", inventory, "--limit", "local")
    assert code == 1
    proc = validate(report)
    assert proc.returncode == 0, proc.stdout.decode()
    assert ET.parse(str(report)).getroot().find(".//testcase/failure") is not None
    playbook = tmp_path / "fail.yml"
    playbook.write_text("- hosts: all\n  tasks:\n    - name: says no\n      command:\n"
                        "        argv: [sh, -c, 'exit 3']\n    - name: never runs\n      command:\n"
                        "        argv: ['true']\n")
    code, report = csdeploy(tmp_path, "run", str(playbook), "-i", inventory, "--limit", "local")
    assert code == 1
    proc = validate(report)
    assert proc.returncode == 0, proc.stdout.decode()


def test_the_validator_fails_a_report_the_schema_refuses(tmp_path, inventory):
    """The defect this test was written for: a `skipped` attribute on
    <testsuites>, which junit-10.xsd does not allow."""
    _, report = csdeploy(tmp_path, "push", "-i", inventory, "--limit", "local")
    tree = ET.parse(str(report))
    tree.getroot().set("skipped", "0")
    broken = tmp_path / "broken.xml"
    tree.write(str(broken))
    proc = validate(broken)
    assert proc.returncode == 1 and b"skipped" in proc.stdout, proc.stdout.decode()
