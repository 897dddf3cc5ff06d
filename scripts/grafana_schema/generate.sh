#!/usr/bin/env bash
# Regenerates tests/observability/grafana-dashboard.schema.json from the TypeScript types of the npm package
# @grafana/schema, with ts-json-schema-generator (versions pinned in package.json / package-lock.json):
#
#   @grafana/schema 13.2.3, ts-json-schema-generator 2.4.0 (the last release that runs on Node 20; 2.5+ need
#   Node >= 22), typescript 5.9.3. Generated with Node 20.20.2, npm 11.19.1.
#
# Grafana itself cannot be installed here, so this schema is what checks that the dashboards are well-formed
# dashboard JSON (tests/observability/test_dashboards.py). Which types go in: entry.ts.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-$repo/tests/observability/grafana-dashboard.schema.json}
cd "$here"
npm ci --no-audit --no-fund --ignore-scripts --silent
# One definition per exported type of entry.ts (the test picks the definition it needs for each part).
# Interfaces get additionalProperties: false (ts-json-schema-generator's default), so a misspelt key fails.
npx --no-install ts-json-schema-generator \
  --path entry.ts \
  --tsconfig tsconfig.json \
  --type AmlGrafanaSchemas \
  --expose export \
  --out "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out"
