#!/usr/bin/env python3
"""Lint and render the ringscale chart with Helm's own Go SDK (PyPI: helm-python-sdk).

    chart.py lint   [--values FILE]...        lint (strict); prints findings, exit 1 on any
    chart.py render [--values FILE]... [--name N] [--namespace NS]
                                              the CRDs and every rendered manifest, as one
                                              multi-document YAML stream on stdout

Exit code 3 means the SDK is not installed (callers print a skip line or fail).
The Rust tests (crates/ringscale/tests/chart.rs, replicas.rs) run this script.
"""

import argparse
import os
import sys

CHART = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_values(files):
    import helm_python as helm

    merged = {}
    for f in files:
        with open(f, encoding="utf-8") as fh:
            values = helm.values_from_yaml(fh.read())
        merged = merge(merged, values)
    return merged


def merge(base, over):
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["lint", "render"])
    parser.add_argument("--values", action="append", default=[])
    parser.add_argument("--name", default="ringscale")
    parser.add_argument("--namespace", default="ringscale")
    args = parser.parse_args()
    try:
        import helm_python as helm
    except ImportError as e:
        print(f"helm-python-sdk is not installed ({e}): pip install helm-python-sdk", file=sys.stderr)
        return 3
    values = load_values(args.values)
    if args.command == "lint":
        report = helm.lint(CHART, values, strict=True, namespace=args.namespace, kube_version="v1.33.0")
        bad = [m for m in report.get("messages") or [] if m.get("severity", 0) >= 2]
        for m in report.get("messages") or []:
            print(f"lint: severity {m.get('severity')} {m.get('path')}: {m.get('error')}")
        for e in report.get("errors") or []:
            print(f"lint error: {e}")
        if bad or report.get("errors"):
            return 1
        print(f"lint: {report.get('total_charts_linted')} chart(s), no warnings or errors")
        return 0
    chart = helm.Chart.load(CHART)
    docs = []
    for crd in sorted(chart.crds, key=lambda c: c["name"]):
        docs.append((crd["name"], crd["data"]))
    rendered = chart.render(values, name=args.name, namespace=args.namespace, is_install=True)
    for path in sorted(rendered):
        if path.endswith("NOTES.txt") or not rendered[path].strip():
            continue
        docs.append((path, rendered[path]))
    for path, text in docs:
        sys.stdout.write(f"---\n# Source: {path}\n{text.strip()}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
