#!/usr/bin/env python3
"""The documentation checked against itself and against the binary.

- Links: every relative link in README.md and docs/*.md resolves: the file
  (or directory) exists, and a `#anchor` names a heading of the target page
  by GitHub's rule for heading anchors (or an explicit `<a name>`/`id`).
  Links inside code blocks and code spans are not links.
- Configuration keys: every key the binary accepts is documented in
  docs/configuration.md. The keys are asked of the binary itself, never
  copied from the source: for each section a configuration with an unknown
  key `zz_unknown` in that section is given to `dynamo-cdc validate`, whose
  error lists the keys the section expects (`unknown field `zz_unknown`,
  expected one of `a`, `b`, ...`). Every key that is itself a section is
  probed the same way, so a new section is found without being listed here.
  A key counts as documented when the part of docs/configuration.md under
  the section's heading (the heading holding `[section]` as code) names it
  as code (`` `key` ``, `` `key = ...` ``) or sets it in a TOML block
  (`key = ...`, also commented out); a top-level key, when `[key]` appears
  as code or as a TOML table header anywhere on the page.
- `--self-test` plants a broken link, a broken anchor and undocumented keys
  in copies of the pages (in a temp directory) and checks that each one is
  reported and that nothing else is.

    python scripts/docs_check.py --bin target/debug/dynamo-cdc
    python scripts/docs_check.py --bin target/debug/dynamo-cdc --self-test

The last line is `docs check: N passed, M failed`; the exit code is 1 when
anything failed.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIG_PAGE = Path("docs") / "configuration.md"
UNKNOWN = "zz_unknown"

# The sections the binary must report keys for (crates/pipeline/src/config.rs
# and the section types of the crates). More may be found by probing; fewer
# is a failure: a section that stops listing its keys cannot be checked.
EXPECTED_SECTIONS = [
    "", "source", "transform", "sinks", "sinks.parquet", "sinks.kafka",
    "sinks.iceberg", "checkpoint", "dead_letter", "metrics", "coordination",
]

# The smallest valid configuration, and the keys a sink's section needs
# once it is present. `validate` touches nothing, so the paths need not exist.
BASE = {
    "source": {"kind": "replay", "path": "examples/data"},
    "sinks": {"parquet": {"path": "out/parquet"}},
    "checkpoint": {"path": "out/checkpoint.json"},
}
REQUIRED = {
    "sinks.kafka": {"brokers": "127.0.0.1:9092", "format": "json"},
    "sinks.iceberg": {"catalog_uri": "sqlite://out/catalog.db", "warehouse": "out/warehouse"},
}


# --- Markdown -----------------------------------------------------------------

FENCE = re.compile(r"^\s{0,3}(```+|~~~+)")


def split_fences(text: str) -> list[tuple[bool, str, str]]:
    """The lines of a page as (in_code_block, fence_info, line); fence lines
    themselves count as code."""
    out = []
    fence = None
    info = ""
    for line in text.split("\n"):
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
            info = line.strip()[len(fence):].strip().lower()
            out.append((True, info, line))
        elif fence is not None and m and line.strip().startswith(fence[0] * len(fence)) \
                and not line.strip()[len(fence):].strip():
            out.append((True, info, line))
            fence = None
            info = ""
        else:
            out.append((fence is not None, info, line))
    return out


def prose(text: str) -> str:
    """The page without its code blocks (blank lines in their place, so line
    numbers hold) and with code spans blanked out."""
    lines = ["" if code else line for code, _, line in split_fences(text)]
    joined = "\n".join(lines)
    return re.sub(r"(`+)(?:(?!\1).)+?\1", lambda m: "code", joined, flags=re.S)


HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def headings(text: str) -> list[tuple[int, str, int]]:
    """ATX headings outside code blocks: (level, text, line index)."""
    out = []
    for i, (code, _, line) in enumerate(split_fences(text)):
        if code:
            continue
        m = HEADING.match(line)
        if m:
            out.append((len(m.group(1)), m.group(2), i))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: inline markup dropped, lower
    case, every character that is not a letter, digit, `_`, `-` or space
    removed, spaces made hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)   # links: their text
    text = re.sub(r"<[^>]+>", "", text)                           # HTML tags
    text = text.replace("`", "")
    text = re.sub(r"(\*\*|__|\*)", "", text)                      # emphasis markers
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def prose_keep_html(text: str) -> str:
    return "\n".join("" if code else line for code, _, line in split_fences(text))


def anchors(text: str) -> set[str]:
    """Every anchor a page offers: heading slugs (repeats get -1, -2, ...)
    and explicit `<a name="...">` / `id="..."`."""
    seen: dict[str, int] = {}
    out = set()
    for _, heading, _ in headings(text):
        base = slug(heading)
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    for m in re.finditer(r"<a\s+[^>]*(?:name|id)\s*=\s*\"([^\"]+)\"", prose_keep_html(text)):
        out.add(m.group(1))
    return out


LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFDEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)


def links(text: str) -> list[tuple[int, str]]:
    """(line number, destination) of every inline link, image and reference
    definition outside code."""
    body = prose(text)
    out = []
    for m in LINK.finditer(body):
        out.append((body.count("\n", 0, m.start(2)) + 1, m.group(2)))
    for m in REFDEF.finditer(body):
        out.append((body.count("\n", 0, m.start(1)) + 1, m.group(1)))
    return out


def pages(root: Path) -> list[Path]:
    return [root / "README.md"] + sorted((root / "docs").glob("*.md"))


def check_links(root: Path) -> list[str]:
    """Problems with the relative links of README.md and docs/*.md under root."""
    problems = []
    cache: dict[Path, set[str]] = {}
    for page in pages(root):
        text = page.read_text()
        name = page.relative_to(root)
        for line, dest in links(text):
            if not dest or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", dest) or dest.startswith("//"):
                continue  # http:, https:, mailto: ...
            path, _, anchor = dest.partition("#")
            path = urllib.parse.unquote(path)
            anchor = urllib.parse.unquote(anchor)
            if path.startswith("/"):
                target = root / path.lstrip("/")
            elif path:
                target = page.parent / path
            else:
                target = page
            if not target.exists():
                problems.append(f"{name}:{line}: link `{dest}`: {path} does not exist")
                continue
            if anchor and target.is_file() and target.suffix == ".md":
                resolved = target.resolve()
                if resolved not in cache:
                    cache[resolved] = anchors(resolved.read_text())
                if anchor not in cache[resolved]:
                    where = target.resolve().relative_to(root.resolve())
                    problems.append(f"{name}:{line}: link `{dest}`: {where} has no heading "
                                    f"with the anchor #{anchor}")
    return problems


# --- Keys from the binary -----------------------------------------------------


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def to_toml(table: dict, prefix: str = "") -> str:
    """A nested dict as TOML: a table's plain keys under its header, then
    its sub-tables."""
    lines = []
    plain = {k: v for k, v in table.items() if not isinstance(v, dict)}
    subs = {k: v for k, v in table.items() if isinstance(v, dict)}
    if prefix and (plain or not subs):
        lines.append(f"[{prefix}]")
    for k, v in plain.items():
        lines.append(f"{k} = {toml_value(v)}")
    text = "\n".join(lines) + ("\n" if lines else "")
    for k, v in subs.items():
        text += "\n" + to_toml(v, f"{prefix}.{k}" if prefix else k)
    return text


def probe_config(section: str) -> str:
    """The base configuration with `zz_unknown` in `section` ("" = the top
    level), the section created (or replacing a plain value) if needed."""
    config = json.loads(json.dumps(BASE))
    parts = section.split(".") if section else []
    for depth in range(1, len(parts) + 1):
        prefix = ".".join(parts[:depth])
        if prefix in REQUIRED:
            node = config
            for p in parts[:depth]:
                if not isinstance(node.get(p), dict):
                    node[p] = {}
                node = node[p]
            for k, v in REQUIRED[prefix].items():
                node.setdefault(k, v)
    node = config
    for p in parts:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[UNKNOWN] = "x"
    return to_toml(config)


def probe(binary: Path, work: Path, section: str) -> tuple[list[str] | None, str]:
    """The keys the binary expects in `section`, from its unknown-field
    error; None (and what it said) when `section` is not a section of
    named keys."""
    config = work / "probe.toml"
    config.write_text(probe_config(section))
    run = subprocess.run([str(binary), "validate", "--config", str(config)],
                         capture_output=True, text=True, timeout=60, cwd=work)
    said = (run.stderr + run.stdout).strip()
    key = f"{section}.{UNKNOWN}" if section else UNKNOWN
    m = re.search(r"config key `" + re.escape(key) + r"`: unknown field `" + UNKNOWN
                  + r"`, (?:expected (.*?)|there are no fields)(?: in `[^`]*`)?\s*$", said, re.M)
    if run.returncode != 2 or not m:
        return None, said
    return re.findall(r"`([^`]+)`", m.group(1) or ""), said


def harvest(binary: Path) -> dict[str, list[str]]:
    """Every section of named keys the binary reports, with its keys."""
    found: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="dynamo-cdc-docs-") as tmp:
        work = Path(tmp)
        todo = [""]
        while todo:
            section = todo.pop(0)
            keys, said = probe(binary, work, section)
            if keys is None:
                if section in EXPECTED_SECTIONS:
                    found.setdefault("!errors", []).append(f"[{section or 'top level'}]: {said}")
                continue
            found[section] = keys
            todo.extend(f"{section}.{k}" if section else k for k in keys)
    return found


# --- Keys in the configuration page -------------------------------------------


def section_scope(text: str, section: str) -> str | None:
    """The part of the page under the heading that holds `[section]` as
    code, down to the next heading of the same or a higher level."""
    lines = text.split("\n")
    heads = headings(text)
    for n, (level, heading, start) in enumerate(heads):
        if f"`[{section}]`" in heading:
            end = len(lines)
            for level2, _, start2 in heads[n + 1:]:
                if level2 <= level:
                    end = start2
                    break
            return "\n".join(lines[start:end])
    return None


def names_key(scope: str, key: str) -> bool:
    k = re.escape(key)
    for code, info, line in split_fences(scope):
        if code:
            if info in ("toml", "") and re.match(r"^\s*#?\s*\"?" + k + r"\"?\s*=", line):
                return True
        elif re.search(r"`" + k + r"(\s*=[^`]*)?`", line):
            return True
    return False


def names_table(text: str, table: str) -> bool:
    t = re.escape(table)
    for code, info, line in split_fences(text):
        if code:
            if info in ("toml", "") and re.match(r"^\s*#?\s*\[" + t + r"[.\]]", line):
                return True
        elif re.search(r"`\[" + t + r"[.\]][^`]*`", line):
            return True
    return False


def check_keys(page: Path, sections: dict[str, list[str]]) -> list[str]:
    """Problems: keys the binary accepts that the page does not document."""
    text = page.read_text()
    name = CONFIG_PAGE
    problems = []
    for section, keys in sections.items():
        if section.startswith("!"):
            continue
        if section == "":
            for key in keys:
                if not names_table(text, key):
                    problems.append(f"{name}: the top-level section `[{key}]` is accepted by "
                                    "the binary but never named as `[" + key + "]`")
            continue
        scope = section_scope(text, section)
        if scope is None:
            problems.append(f"{name}: no heading names `[{section}]` (its keys: "
                            + ", ".join(keys) + ")")
            continue
        for key in keys:
            if names_key(scope, key) or names_table(text, f"{section}.{key}"):
                continue
            problems.append(f"{name}: `{section}.{key}` is accepted by the binary but not "
                            f"documented under the `[{section}]` heading")
    return problems


def harvest_problems(sections: dict[str, list[str]]) -> list[str]:
    problems = list(sections.get("!errors", []))
    for section in EXPECTED_SECTIONS:
        if section not in sections:
            problems.append(f"the binary listed no keys for [{section or 'top level'}]")
    return problems


# --- Self-test ----------------------------------------------------------------


def self_test(binary: Path, sections: dict[str, list[str]], check) -> None:
    cases = {
        "Several processes: leases": "several-processes-leases",
        "Delivery: nothing lost, nothing twice": "delivery-nothing-lost-nothing-twice",
        "`[sinks.parquet]`": "sinksparquet",
        "Checking a file: `dynamo-cdc validate`": "checking-a-file-dynamo-cdc-validate",
        "dynamo-cdc — the design as built": "dynamo-cdc--the-design-as-built",
        "The live source's GetRecords": "the-live-sources-getrecords",
        "`max_file_age_ms` and [a link](x.md)": "max_file_age_ms-and-a-link",
    }
    wrong = {h: (slug(h), s) for h, s in cases.items() if slug(h) != s}
    check("self-test: anchors are GitHub's", not wrong, f"got, expected: {wrong}")
    text = "# A\n\n## A\n\n```md\n# not a heading\n```\n\n<a name=\"here\"></a>\n"
    got = anchors(text)
    check("self-test: repeated headings get -1, code is not a heading, <a name> counts",
          got == {"a", "a-1", "here"}, str(sorted(got)))

    with tempfile.TemporaryDirectory(prefix="dynamo-cdc-docs-self-") as tmp:
        root = Path(tmp)
        shutil.copy(REPO / "README.md", root / "README.md")
        shutil.copytree(REPO / "docs", root / "docs")
        for keep in ("examples", "schemas", "scripts"):  # link targets outside docs/
            if (REPO / keep).exists():
                (root / keep).symlink_to(REPO / keep)
        before = set(check_links(root))
        kafka = root / "docs" / "kafka.md"
        kafka.write_text(kafka.read_text()
                         + "\nA [planted missing page](nowhere-at-all.md) and a [planted missing"
                           "\nanchor](configuration.md#no-such-heading), a [good"
                           " one](configuration.md#sinksparquet)\nand `[one in code](gone.md)`.\n"
                           "\n```text\n[one in a block](gone-too.md)\n```\n")
        after = set(check_links(root))
        new = sorted(after - before)
        check("self-test: a planted broken link and a broken anchor are reported, nothing else",
              len(new) == 2 and "nowhere-at-all.md does not exist" in new[0] + new[1]
              and "#no-such-heading" in new[0] + new[1], "new problems: " + repr(new))

        page = root / CONFIG_PAGE
        text = page.read_text()
        scope = section_scope(text, "sinks.parquet")
        check("self-test: the page has a `[sinks.parquet]` heading to plant in", scope is not None)
        if scope is not None:
            trimmed = "\n".join(line for line in scope.split("\n") if "zstd_level" not in line)
            page.write_text(text.replace(scope, trimmed))
        planted = dict(sections)
        planted["coordination"] = list(planted.get("coordination", [])) + ["zz_planted_key"]
        got = check_keys(page, planted)
        base = set(check_keys(REPO / CONFIG_PAGE, sections))
        new = sorted(set(got) - base)
        check("self-test: a key removed from its section and a planted key are reported",
              len(new) == 2 and any("`sinks.parquet.zstd_level`" in p for p in new)
              and any("`coordination.zz_planted_key`" in p for p in new), "new problems: " + repr(new))
        page.write_text(text.replace("## `[metrics]`", "## Metrics"))
        got = check_keys(page, sections)
        check("self-test: a section without its heading is reported",
              any("no heading names `[metrics]`" in p for p in got), repr(got))

    # The probe itself: a planted unknown key in a known section comes back
    # with that section's keys, and a plain value is not taken for a section.
    with tempfile.TemporaryDirectory(prefix="dynamo-cdc-docs-probe-") as tmp:
        keys, said = probe(binary, Path(tmp), "sinks.parquet")
        check("self-test: the binary lists the keys of [sinks.parquet]",
              keys is not None and "path" in keys and "zstd_level" in keys, said)
        keys, said = probe(binary, Path(tmp), "checkpoint.path")
        check("self-test: a plain key is not probed as a section", keys is None, said)


# --- Main ---------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", required=True, type=Path, help="the dynamo-cdc binary")
    parser.add_argument("--self-test", action="store_true",
                        help="plant problems in copies of the pages and check they are reported")
    args = parser.parse_args(argv)
    binary = args.bin.resolve()
    results: list[tuple[str, bool]] = []

    def check(name: str, ok: bool, detail: str = "") -> None:
        results.append((name, bool(ok)))
        print(f"  {'ok  ' if ok else 'FAIL'} {name}" + ("" if ok or not detail else f": {detail}"))

    def report(name: str, problems: list[str]) -> None:
        check(name + ("" if not problems else f" ({len(problems)} problem(s))"), not problems)
        for p in problems:
            print(f"       {p}")

    if not binary.is_file():
        print(f"docs check: no binary at {binary}", file=sys.stderr)
        return 1
    sections = harvest(binary)
    if args.self_test:
        self_test(binary, sections, check)
    else:
        n_links = sum(len(links(p.read_text())) for p in pages(REPO))
        report(f"links of README.md and docs/*.md resolve ({n_links} links, "
               f"{len(pages(REPO))} pages)", check_links(REPO))
        report("the binary lists the keys of every section", harvest_problems(sections))
        n_keys = sum(len(v) for k, v in sections.items() if not k.startswith("!"))
        report(f"every key the binary accepts is in {CONFIG_PAGE} ({n_keys} keys in "
               f"{len([k for k in sections if not k.startswith('!')])} sections)",
               check_keys(REPO / CONFIG_PAGE, sections))
    failed = sum(1 for _, ok in results if not ok)
    print(f"docs check: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
