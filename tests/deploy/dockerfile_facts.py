#!/usr/bin/python3
"""Read docker/Dockerfile and check the facts the project promises about it.

  dockerfile_facts.py DOCKERFILE [--packages]

--packages   print "STAGE<TAB>PACKAGE" for every package an `apt-get install`
             names (for check_dockerfile.sh's `apt-get install -s`); exit 0.
otherwise    check the contract (exit 1 with one FAIL line per problem):
             two stages, debian:bookworm -> debian:bookworm-slim; the build
             stage runs cmake --preset release, the build and
             `ctest --preset release -L unit`; the runtime stage installs no
             compiler or -dev package, runs as a numeric non-root USER, and has
             ENTRYPOINT ["mtlsd"], CMD ["run","--config","/etc/mtlsd/mtlsd.yaml"]
             and HEALTHCHECK CMD ["mtlsd","health","--url",".../readyz"].
"""
import json
import re
import shlex
import sys


def instructions(text):
    """Yield (lineno, INSTRUCTION, args) with continuation lines joined."""
    buf, start = "", None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if start is None:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            start = n
        elif line.lstrip().startswith("#"):
            continue  # comment inside a continued instruction
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        yield start, word.upper(), rest.strip()
        buf, start = "", None


def substitute(value, args):
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)), value)


def parse(path):
    text = open(path, encoding="utf-8").read()
    global_args, stages = {}, []
    for lineno, ins, rest in instructions(text):
        if ins == "ARG" and not stages:
            k, _, v = rest.partition("=")
            global_args[k.strip()] = v.strip()
            continue
        if ins == "FROM":
            parts = rest.split()
            image = substitute(parts[0], global_args)
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else str(len(stages))
            stages.append({"name": name, "image": image, "line": lineno, "ins": []})
            continue
        if stages:
            stages[-1]["ins"].append((lineno, ins, rest))
    return stages


def apt_packages(run):
    """Package names of every `apt-get install` in a RUN command line."""
    pkgs = []
    try:
        tokens = shlex.split(run)
    except ValueError:
        tokens = run.split()
    i = 0
    while i < len(tokens):
        if tokens[i] in ("apt-get", "apt") and i + 1 < len(tokens):
            j = i + 1
            while j < len(tokens) and tokens[j].startswith("-"):
                j += 1
            if j < len(tokens) and tokens[j] == "install":
                j += 1
                while j < len(tokens) and tokens[j] not in ("&&", "||", ";", "|"):
                    tok = tokens[j].rstrip(";")
                    if not tok.startswith("-"):
                        pkgs.append(tok)
                    if tokens[j].endswith(";"):
                        break
                    j += 1
            i = j
        else:
            i += 1
    return pkgs


def exec_form(rest):
    try:
        v = json.loads(rest)
    except json.JSONDecodeError:
        return None
    return v if isinstance(v, list) and all(isinstance(x, str) for x in v) else None


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    path = sys.argv[1]
    stages = parse(path)
    if "--packages" in sys.argv[2:]:
        for st in stages:
            for _, ins, rest in st["ins"]:
                if ins == "RUN":
                    for p in apt_packages(rest):
                        print(f"{st['name']}\t{p}")
        return 0

    problems = []
    if len(stages) != 2:
        problems.append(f"expected 2 stages (build, runtime), found {len(stages)}")
    if stages:
        build, runtime = stages[0], stages[-1]
        if build["image"] != "debian:bookworm":
            problems.append(f"build stage image is {build['image']}, expected debian:bookworm")
        if runtime["image"] != "debian:bookworm-slim":
            problems.append(f"runtime stage image is {runtime['image']}, expected debian:bookworm-slim")
        build_runs = " ".join(r for _, i, r in build["ins"] if i == "RUN")
        for needle in ("cmake --preset release", "cmake --build --preset release", "ctest --preset release -L unit"):
            if needle not in build_runs:
                problems.append(f"build stage does not run `{needle}`")
        rt_pkgs = [p for _, i, r in runtime["ins"] if i == "RUN" for p in apt_packages(r)]
        for p in rt_pkgs:
            if p.endswith("-dev") or p in ("g++", "gcc", "cmake", "ninja-build", "build-essential", "curl", "wget"):
                problems.append(f"runtime stage installs build/debug tool {p}")
        last = {}
        for lineno, ins, rest in runtime["ins"]:
            last[ins] = (lineno, rest)
        copies = [r for _, i, r in runtime["ins"] if i == "COPY"]
        if not any(f"--from={build['name']}" in c for c in copies):
            problems.append(f"runtime stage does not COPY --from={build['name']}")
        user = last.get("USER", (0, ""))[1]
        uid = user.split(":")[0]
        if not uid.isdigit():
            problems.append(f"USER must be numeric (Kubernetes runAsNonRoot can only verify a number), got {user!r}")
        elif int(uid) == 0:
            problems.append("USER must not be root (0)")
        want = {
            "ENTRYPOINT": ["mtlsd"],
            "CMD": ["run", "--config", "/etc/mtlsd/mtlsd.yaml"],
        }
        for ins, value in want.items():
            got = exec_form(last.get(ins, (0, ""))[1])
            if got != value:
                problems.append(f"{ins} must be {json.dumps(value)}, got {last.get(ins, (0, 'nothing'))[1]}")
        hc = last.get("HEALTHCHECK", (0, ""))[1]
        m = re.search(r"\bCMD\s+(\[.*\])\s*$", hc)
        got = exec_form(m.group(1)) if m else None
        if not (got and got[:3] == ["mtlsd", "health", "--url"] and len(got) == 4 and got[3].endswith("/readyz")):
            problems.append(f'HEALTHCHECK must be CMD ["mtlsd","health","--url","http://.../readyz"], got {hc!r}')
    for p in problems:
        print(f"FAIL: {path}: {p}")
    if problems:
        return 1
    print(f"ok: {path}: stages {' -> '.join(s['image'] + ' AS ' + s['name'] for s in stages)}; "
          f"unit tests in the build; numeric non-root USER; ENTRYPOINT/CMD/HEALTHCHECK as specified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
