"""The CI examples in examples/ci/ are valid for their CI system (the
GitHub Actions and GitLab CI schemas that check-jsonschema vendors, used
offline) and every csdeploy command in them is one csdeploy accepts."""
import os
import re
import shutil
import subprocess

import pytest

from conftest import REPO, csdeploy_binary

EXAMPLES = os.path.join(REPO, "examples", "ci")
SCHEMAS = {"github-actions.yml": "vendor.github-workflows", "gitlab-ci.yml": "vendor.gitlab-ci"}


def check_jsonschema():
    """scripts/test installs it into target/lint-venv; under CI it must be there."""
    found = os.path.join(REPO, "target", "lint-venv", "bin", "check-jsonschema")
    if os.access(found, os.X_OK):
        return found
    found = shutil.which("check-jsonschema")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("check-jsonschema is missing: scripts/test installs it into target/lint-venv")
    pytest.skip("check-jsonschema is not installed (scripts/test installs it)")


def validate(tool, schema, path):
    return subprocess.run([tool, "--builtin-schema", schema, path],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_example_is_valid_for_its_ci_system(name, tmp_path):
    tool = check_jsonschema()
    proc = validate(tool, SCHEMAS[name], os.path.join(EXAMPLES, name))
    assert proc.returncode == 0, proc.stdout.decode()
    # The validator can fail: the same file with a job that has no steps/script.
    with open(os.path.join(EXAMPLES, name)) as f:
        text = f.read()
    broken = tmp_path / name
    broken_text = re.sub(r"\n( +)(steps|script):", r"\n\1not_a_key:", text, count=1)
    assert broken_text != text
    broken.write_text(broken_text)
    assert validate(tool, SCHEMAS[name], str(broken)).returncode != 0


def csdeploy_lines(text):
    """The csdeploy command lines of a CI file, folded `>` blocks joined."""
    lines, current = [], None
    for raw in text.splitlines():
        line = raw.strip()
        line = line[2:] if line.startswith("- ") else line
        if current is not None:
            if line and not line.endswith(":") and not line.startswith(("- ", "name:", "if:", "uses:")) \
                    and raw.startswith(" " * indent):
                current += " " + line
                continue
            lines.append(current)
            current = None
        if line.startswith("csdeploy "):
            current, indent = line, len(raw) - len(raw.lstrip())
        elif line.startswith("run: csdeploy "):
            lines.append(line[len("run: "):])
    if current is not None:
        lines.append(current)
    return lines


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_csdeploy_command_in_the_example_parses(name, tmp_path):
    with open(os.path.join(EXAMPLES, name)) as f:
        commands = csdeploy_lines(f.read())
    assert any("--shard" in c for c in commands) and any("report merge" in c for c in commands), commands
    for command in commands:
        # CI variables become values; the inventory and reports do not exist,
        # so a command that parses stops at reading them (exit 2, "cannot read").
        concrete = re.sub(r"\$\{\{ matrix\.shard \}\}", "1", command)
        concrete = concrete.replace('"$CI_NODE_INDEX/$CI_NODE_TOTAL"', "1/4").replace('"$CI_NODE_INDEX"', "1")
        concrete = concrete.replace("report-$CI_NODE_INDEX.json", "report-1.json")
        argv = concrete.split()[1:]
        argv = [str(tmp_path / "missing" / os.path.basename(a)) if a.endswith((".yml", ".json", ".xml")) else a
                for a in argv]
        proc = subprocess.run([csdeploy_binary()] + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              cwd=str(tmp_path), timeout=30)
        err = proc.stderr.decode()
        assert proc.returncode == 2 and "cannot read" in err, "%s\n%s" % (concrete, err)
