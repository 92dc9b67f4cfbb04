"""How deep llguidance would have to recurse to compile a grammar, measured in Python first.

llguidance (1.9) compiles a rule the first time another rule names it, inside that
rule's compilation, and resolves a JSON schema's `$ref` the same way: a chain of
3,000 Lark rules or 1,000 `$ref`s overflows the native stack and the whole process
dies with SIGSEGV (docs/SECURITY.md; no Python exception can catch it).  Nesting
inside one rule or one schema object is bounded by llguidance itself (its parsers
refuse "too deeply nested" text), so what is measured here is the depth of the
graph of references.

The measure is an upper bound whatever order the compiler walks the rules in: the
longest path through the graph, where a cycle (a recursive rule, a recursive
schema) counts as all of its members.  It errs on the side of a larger number (a
name inside a character class may count as a reference); the compile worker
(webui/generation/grammar_worker.py) is the net under what it misses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Hashable, Iterable
from typing import Any

# A rule definition at the start of a line: Lark `name:`, `?name:`, `name.2:`, or
# GBNF `name ::=`.
_DEFINITION = re.compile(r"^[ \t]*[?!]?([A-Za-z_][A-Za-z0-9_-]*)(?:\.-?[0-9]+)?[ \t]*(?:::=|:)", re.M)
# Literal text and Lark regexes hold no references.
_LITERAL = re.compile(r'"(?:\\.|[^"\\\n])*"|/(?:\\.|[^/\\\n])+/[imslux]*')
_COMMENT = re.compile(r"(?m)(?://|#)[^\n]*$")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def grammar_depth(text: str) -> int:
    """The longest chain of rule references in a Lark or GBNF grammar."""
    starts = list(_DEFINITION.finditer(text))
    bodies: dict[str, list[str]] = {}
    for index, match in enumerate(starts):
        end = starts[index + 1].start() if index + 1 < len(starts) else len(text)
        body = _COMMENT.sub("", _LITERAL.sub(" ", text[match.end():end]))
        bodies.setdefault(match.group(1), []).append(body)
    defined = set(bodies)
    edges = {name: {ref for body in parts for ref in _NAME.findall(body) if ref in defined}
             for name, parts in bodies.items()}
    return max(longest_path(edges), _embedded_schemas_depth(text))


def _embedded_schemas_depth(text: str) -> int:
    """Lark in llguidance may hold JSON schemas inline (`%json { ... }`); each is a
    schema to measure, and its depth adds to the rule that holds it (counted as 1)."""
    deepest = 0
    decoder = json.JSONDecoder()
    for match in re.finditer(r"%json\s*", text):
        try:
            schema, _ = decoder.raw_decode(text, match.end())
        except RecursionError:
            return 10**9  # deeper than any limit
        except ValueError:
            continue  # not JSON: llguidance will say so
        deepest = max(deepest, 1 + schema_depth(schema))
    return deepest


def schema_depth(schema: Any) -> int:
    """The longest chain of nested objects/arrays in a JSON schema (parsed), following
    `$ref`s to their targets in the same document (#/... pointers)."""
    edges: dict[int, set[int]] = {}
    stack = [schema]
    while stack:
        node = stack.pop()
        if id(node) in edges:
            continue
        children = [v for v in (node.values() if isinstance(node, dict) else node) if isinstance(v, (dict, list))]
        targets = {id(v) for v in children}
        if isinstance(node, dict) and isinstance(node.get("$ref"), str):
            target = _pointer(schema, node["$ref"])
            if isinstance(target, (dict, list)):
                targets.add(id(target))
                children.append(target)
        edges[id(node)] = targets
        stack.extend(children)
    return longest_path(edges) if isinstance(schema, (dict, list)) else 0


def _pointer(document: Any, ref: str) -> Any:
    """The value a local JSON pointer ("#/$defs/a") names; None for anything else."""
    if not ref.startswith("#"):
        return None
    node = document
    for part in ref[1:].split("/")[1:] if ref != "#" else ():
        part = re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), part)
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def longest_path(edges: dict[Any, Iterable[Hashable]]) -> int:
    """Nodes on the longest path of a directed graph, a cycle counting all its members
    (strongly connected components, Tarjan's, without recursion: the graphs measured
    here are the hostile ones)."""
    index: dict[Any, int] = {}
    low: dict[Any, int] = {}
    on_stack: set[Any] = set()
    stack: list[Any] = []
    component: dict[Any, int] = {}
    sizes: list[int] = []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(edges.get(root, ())))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            advanced = False
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(edges.get(succ, ()))))
                    advanced = True
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                members = 0
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component[member] = len(sizes)
                    members += 1
                    if member == node:
                        break
                sizes.append(members)
    # Tarjan's numbers components in reverse topological order: every edge leaves a
    # component for one numbered lower, so one pass in number order finds the depths.
    successors: list[set[int]] = [set() for _ in sizes]
    for node, targets in edges.items():
        for target in targets:
            if component[target] != component[node]:
                successors[component[node]].add(component[target])
    depth = [0] * len(sizes)
    for number, size in enumerate(sizes):
        depth[number] = size + max((depth[s] for s in successors[number]), default=0)
    return max(depth, default=0)
