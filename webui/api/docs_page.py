"""/v1/docs: the API's routes as one self-contained HTML page.

FastAPI's own docs page loads Swagger UI's scripts and styles from a CDN, so opening
it would contact the internet (docs/SECURITY.md, "Privacy").  This page is built on
the server from the same OpenAPI schema, with no script and no outside address:
every route, what it takes and what it answers.  The schema itself stays at
/v1/openapi.json for tools.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h2{margin-top:2rem;border-bottom:1px solid #ddd}
code,pre{background:#f4f4f4;border-radius:4px}
pre{padding:.6rem;overflow-x:auto;font-size:13px}
.method{font-weight:bold;text-transform:uppercase;margin-right:.4rem}
"""


def docs_html(schema: dict[str, Any]) -> str:
    """The page for an OpenAPI `schema`; every value from it is HTML-escaped."""
    info = schema.get("info", {})
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{escape(str(info.get('title', 'API')))}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(str(info.get('title', 'API')))}</h1>",
        "<p>The machine-readable schema is at <a href='/v1/openapi.json'>/v1/openapi.json</a>.</p>",
    ]
    components = schema.get("components", {}).get("schemas", {})
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            parts.append(f"<h2><span class='method'>{escape(method)}</span><code>{escape(path)}</code></h2>")
            if op.get("summary"):
                parts.append(f"<p>{escape(str(op['summary']))}</p>")
            params = [p.get("name", "") for p in op.get("parameters", [])]
            if params:
                parts.append("<p>Parameters: " + ", ".join(f"<code>{escape(str(p))}</code>" for p in params) + "</p>")
            ref = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            body = components.get(str(ref.get("$ref", "")).rsplit("/", 1)[-1])
            if body:
                shown = json.dumps(body.get("properties", {}), indent=1, sort_keys=True)
                parts.append(f"<p>Request body:</p><pre>{escape(shown)}</pre>")
    parts.append("</body></html>")
    return "".join(parts)
