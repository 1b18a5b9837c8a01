#!/usr/bin/env python3
"""A small stand-in for Apache Solr, enough for an unmodified CKAN 2.12 in development and tests.

Apache Solr cannot be installed on the development/CI machines (no Debian package, no Maven
Central), and CKAN writes every dataset to its search index synchronously. This server speaks
the subset of Solr's HTTP API that CKAN (through pysolr) and ckanext-dcat use, on one core:

    GET  /solr/<core>/admin/file/?file=schema.xml  schema version check (name="ckan-2.12")
    GET  /solr/<core>/schema?wt=schema.xml          (same)
    GET|POST /solr/<core>/select                    q, fq, fl, rows, start, sort, facet.*
    POST /solr/<core>/update                        JSON doc list (add), XML <delete>/<commit>

Documents are kept in memory and saved to a JSON file after every change (atomic rename), so
a restart keeps the index. Query support: ``*:*``, ``field:value``, quoted phrases, ``+``/``-``
prefixes, AND/OR/NOT, parentheses, ``field:(a OR b)``, ranges ``[a TO b]`` (string order,
``*`` and ``NOW`` open), trailing ``*`` wildcards and free-text terms (case-insensitive
substring over the document's text values). Scoring is not implemented: ``score`` sorts are
ignored. Production uses the real ``ckan/ckan-solr`` image (docker-compose.yml).

Usage: python solr_standin.py --host 127.0.0.1 --port 8983 --data DIR [--pid-file FILE]
Standard library only, so it runs under any Python 3.9+.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import sys
import threading
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

SCHEMA_XML = '<?xml version="1.0" encoding="UTF-8"?>\n<schema name="ckan-2.12" version="1.6"/>\n'
UNIQUE_KEY = "index_id"
_TOKEN_RE = re.compile(
    r'\s*(?:(?P<lp>\()|(?P<rp>\))|(?P<range>[\[{][^\]}]*[\]}])|(?P<quoted>"(?:[^"\\]|\\.)*")'
    r"|(?P<word>(?:[^\s()\"\\\[\]{}]|\\.)+))"
)


class QueryError(ValueError):
    """A query this stand-in cannot parse (answered with HTTP 400, like Solr)."""


# ---------------------------------------------------------------- query parsing and matching
def _tokenize(q: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(q):
        if q[pos:].strip() == "":
            break
        m = _TOKEN_RE.match(q, pos)
        if not m or m.end() == pos:
            raise QueryError(f"cannot parse query near {q[pos:pos + 30]!r}")
        pos = m.end()
        kind = m.lastgroup
        tokens.append((kind, m.group(kind)))
    return tokens


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


class _Parser:
    """Recursive descent over tokens. A node is a callable doc -> bool."""

    def __init__(self, q: str, default_field: str | None = None) -> None:
        self.tokens = _tokenize(q)
        self.i = 0
        self.default_field = default_field

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def parse(self):
        node = self.expr()
        if self.peek() is not None:
            raise QueryError(f"unexpected {self.peek()[1]!r}")
        return node

    def expr(self):
        # OR-separated groups of AND-ed clauses (AND binds tighter); '+' is AND, '-'/NOT negates.
        groups: list[list] = [[]]
        while (tok := self.peek()) is not None and tok[0] != "rp":
            if tok == ("word", "OR") or tok == ("word", "||"):
                self.take()
                groups.append([])
                continue
            if tok in (("word", "AND"), ("word", "&&")):
                self.take()
                continue
            groups[-1].append(self.clause())
        groups = [g for g in groups if g]
        if not groups:
            return lambda doc: True
        return lambda doc: any(all(c(doc) for c in g) for g in groups)

    def clause(self):
        kind, text = self.take()
        negate = False
        if kind == "word" and text == "NOT":
            inner = self.clause()
            return lambda doc: not inner(doc)
        if kind == "word" and text[0] in "+-" and len(text) > 1:
            negate = text[0] == "-"
            text = text[1:]
        elif kind == "word" and text in ("+", "-"):
            negate = text == "-"
            kind, text = self.take()
        if kind == "lp":
            inner = self.expr()
            self._close()
        elif kind == "word" and text.startswith("{!"):
            inner = lambda doc: True
        elif kind == "word" and ":" in text and not text.startswith(":"):
            field, _, value = text.partition(":")
            field = _unescape(field)
            inner = self.field_value(field, value)
        elif kind == "quoted":
            inner = _text_match(_unescape(text[1:-1]))
        elif kind == "word":
            inner = _text_match(_unescape(text))
        else:
            raise QueryError(f"unexpected {text!r}")
        if negate:
            return lambda doc: not inner(doc)
        return inner

    def _close(self) -> None:
        tok = self.peek()
        if tok is None or tok[0] != "rp":
            raise QueryError("missing ')'")
        self.take()

    def field_value(self, field: str, value: str):
        if value == "":  # field:"..." / field:(...) / field:[a TO b] are separate tokens
            kind, text = self.take()
            if kind == "quoted":
                return _field_match(field, _unescape(text[1:-1]), exact=True)
            if kind == "range":
                return _range_match(field, text)
            if kind == "lp":
                values = []
                while (tok := self.peek()) is not None and tok[0] != "rp":
                    k, t = self.take()
                    if (k, t) in (("word", "OR"), ("word", "||")):
                        continue
                    values.append(_field_match(field, _unescape(t[1:-1]) if k == "quoted"
                                               else _unescape(t), exact=k == "quoted"))
                self._close()
                return lambda doc: any(v(doc) for v in values)
            raise QueryError(f"no value for field {field!r}")
        return _field_match(field, _unescape(value), exact=False)


def _values(doc: dict, field: str) -> list:
    value = doc.get(field)
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _as_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _field_match(field: str, wanted: str, exact: bool):
    if field == "*" and wanted == "*":
        return lambda doc: True
    if not exact and wanted == "*":
        return lambda doc: bool(_values(doc, field))
    if not exact and ("*" in wanted or "?" in wanted):
        pattern = wanted.lower()
        return lambda doc: any(fnmatch.fnmatchcase(_as_text(v).lower(), pattern)
                               for v in _values(doc, field))
    low = wanted.lower()
    if field == "text":
        return _text_match(wanted)
    return lambda doc: any(_as_text(v) == wanted or _as_text(v).lower() == low
                           for v in _values(doc, field))


def _range_match(field: str, text: str):
    lo, _, hi = text[1:-1].partition(" TO ")
    lo, hi = lo.strip().strip('"'), hi.strip().strip('"')

    def ok(v) -> bool:
        s = _as_text(v)
        if lo not in ("*", "") and not lo.startswith("NOW") and s < lo:
            return False
        return not (hi not in ("*", "") and not hi.startswith("NOW") and s > hi)

    return lambda doc: any(ok(v) for v in _values(doc, field))


def _text_match(term: str):
    low = term.lower()
    if low in ("*", "*:*"):
        return lambda doc: True

    def match(doc: dict) -> bool:
        for key, value in doc.items():
            if key in ("data_dict", "validated_data_dict"):
                continue
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, str) and low in v.lower():
                    return True
        return False

    return match


def compile_query(q: str):
    """Compile a Solr query string to a predicate over documents (dicts)."""
    q = (q or "").strip()
    if q in ("", "*:*", "*"):
        return lambda doc: True
    return _Parser(q).parse()


# ---------------------------------------------------------------- the index
class Index:
    """Documents by unique key, persisted as one JSON file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.docs: dict[str, dict] = {}
        if os.path.exists(path):
            with open(path, encoding="utf-8") as fh:
                self.docs = json.load(fh)

    def _save(self) -> None:
        tmp = f"{self.path}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(self.docs, fh)
        os.replace(tmp, self.path)

    def add(self, docs: list[dict]) -> None:
        with self.lock:
            for doc in docs:
                key = doc.get(UNIQUE_KEY) or doc.get("id")
                if key is None:
                    raise QueryError(f"document without {UNIQUE_KEY}")
                self.docs[str(key)] = doc
            self._save()

    def delete(self, ids: list[str], queries: list[str]) -> None:
        with self.lock:
            for key in ids:
                self.docs.pop(key, None)
            for q in queries:
                pred = compile_query(q)
                for key in [k for k, d in self.docs.items() if pred(d)]:
                    del self.docs[key]
            self._save()

    def select(self, params: dict[str, list[str]]) -> dict:
        one = lambda name, default=None: params.get(name, [default])[-1]
        preds = [compile_query(one("q", "*:*"))]
        preds += [compile_query(fq) for fq in params.get("fq", []) if fq.strip()]
        with self.lock:
            hits = [d for d in self.docs.values() if all(p(d) for p in preds)]
        for key, direction in reversed(_sort_spec(one("sort", "") or "")):
            hits.sort(key=lambda d, k=key: _sort_key(d, k), reverse=direction == "desc")
        start, rows = int(one("start", "0") or 0), int(one("rows", "10") or 10)
        page = hits[start:start + rows]
        fl = [f for f in re.split(r"[\s,]+", one("fl", "*") or "*") if f and f != "score"]
        if "*" not in fl:
            page = [{k: d[k] for k in fl if k in d} for d in page]
        body: dict = {
            "responseHeader": {"status": 0, "QTime": 0},
            "response": {"numFound": len(hits), "start": start, "docs": page},
        }
        if one("facet", "false") == "true":
            body["facet_counts"] = {"facet_fields": _facets(hits, params)}
        return body


def _sort_spec(sort: str) -> list[tuple[str, str]]:
    spec = []
    for part in sort.split(","):
        bits = part.split()
        if bits and bits[0] != "score":
            spec.append((bits[0], bits[1].lower() if len(bits) > 1 else "asc"))
    return spec


def _sort_key(doc: dict, key: str):
    values = _values(doc, key)
    value = values[0] if values else ""
    return (0, value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else (1, _as_text(value).lower())


def _facets(hits: list[dict], params: dict[str, list[str]]) -> dict[str, list]:
    limit = int(params.get("facet.limit", ["50"])[-1] or 50)
    mincount = int(params.get("facet.mincount", ["1"])[-1] or 1)
    out = {}
    for field in params.get("facet.field", []):
        counts: dict[str, int] = {}
        for doc in hits:
            for v in {_as_text(x) for x in _values(doc, field)}:
                counts[v] = counts.get(v, 0) + 1
        ranked = sorted(((v, c) for v, c in counts.items() if c >= mincount),
                        key=lambda vc: (-vc[1], vc[0]))
        if limit >= 0:
            ranked = ranked[:limit]
        out[field] = [x for vc in ranked for x in vc]
    return out


# ---------------------------------------------------------------- HTTP
class Handler(BaseHTTPRequestHandler):
    index: Index
    core: str = "ckan"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args) -> None:  # quiet unless debugging
        if os.environ.get("SOLR_STANDIN_DEBUG"):
            sys.stderr.write("solr-standin: " + fmt % args + "\n")

    def _send(self, status: int, body: str | bytes, ctype: str = "application/json") -> None:
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", f"{ctype}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, msg: str) -> None:
        self._send(status, json.dumps({"responseHeader": {"status": status},
                                       "error": {"msg": msg, "code": status}}))

    def _route(self) -> tuple[str, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        prefix = f"/solr/{self.core}"
        path = parts.path.rstrip("/")
        if not path.startswith(prefix):
            return "", {}
        return path[len(prefix):] or "/", parse_qs(parts.query, keep_blank_values=True)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:
        self._handle(b"")

    def do_POST(self) -> None:
        self._handle(self._body())

    def _handle(self, body: bytes) -> None:
        route, params = self._route()
        try:
            if route in ("/admin/file", "/schema"):
                self._send(200, SCHEMA_XML, "application/xml")
            elif route == "/admin/ping":
                self._send(200, json.dumps({"status": "OK"}))
            elif route == "/select":
                ctype = self.headers.get("Content-Type", "")
                if body and "x-www-form-urlencoded" in ctype:
                    for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items():
                        params.setdefault(k, []).extend(v)
                self._send(200, json.dumps(self.index.select(params)))
            elif route == "/update":
                self._update(body, self.headers.get("Content-Type", ""))
                self._send(200, json.dumps({"responseHeader": {"status": 0, "QTime": 0}}))
            else:
                self._error(404, f"no handler for {self.path}")
        except (QueryError, ValueError, ET.ParseError) as err:
            self._error(400, str(err))

    def _update(self, body: bytes, ctype: str) -> None:
        if not body.strip():
            return
        if "json" in ctype:
            docs = json.loads(body)
            self.index.add(docs if isinstance(docs, list) else [docs])
            return
        root = ET.fromstring(body)
        if root.tag == "add":
            docs = []
            for doc_el in root.findall("doc"):
                doc: dict = {}
                for f in doc_el.findall("field"):
                    name, value = f.get("name"), f.text or ""
                    if name in doc:
                        doc[name] = _values(doc, name) + [value]
                    else:
                        doc[name] = value
                docs.append(doc)
            self.index.add(docs)
        elif root.tag == "delete":
            self.index.delete([e.text or "" for e in root.findall("id")],
                              [e.text or "" for e in root.findall("query")])
        # <commit/> and <optimize/>: every change is already durable.


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Solr stand-in for a development CKAN.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8983)
    parser.add_argument("--core", default="ckan")
    parser.add_argument("--data", required=True, help="directory for the index file")
    parser.add_argument("--pid-file")
    args = parser.parse_args(argv)
    os.makedirs(args.data, exist_ok=True)
    Handler.index = Index(os.path.join(args.data, f"{args.core}-index.json"))
    Handler.core = args.core
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    if args.pid_file:
        with open(args.pid_file, "w") as fh:
            fh.write(str(os.getpid()))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
