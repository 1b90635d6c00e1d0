#!/usr/bin/python3
"""Read docker/Dockerfile and check the facts the project promises about it.

  dockerfile_facts.py DOCKERFILE [--packages]

--packages   print "STAGE<TAB>PACKAGE" for every package an `apt-get install`
             names (for check_dockerfile.sh's `apt-get install -s`); exit 0.
otherwise    check the contract (exit 1 with one FAIL line per problem):
             two stages, debian:bookworm (optionally pinned @sha256:<64 hex>)
             -> scratch; the build stage runs cmake --preset release, the
             build, `ctest --preset release -L unit` and docker/rootfs.sh
             into the directory the runtime stage copies (COPY --from=build),
             which is all the runtime stage has: no RUN (scratch has no
             shell), ENV PATH with /usr/bin, OCI labels
             (org.opencontainers.image.*, only keys the OCI image spec
             defines; title, description, version, revision, created and
             source present; the version's default is CMakeLists.txt's
             project VERSION), a numeric non-root USER, ENTRYPOINT ["mtlsd"],
             CMD ["run","--config","/etc/mtlsd/mtlsd.yaml"] and HEALTHCHECK
             CMD ["mtlsd","health","--url",".../readyz"] (exec form: no shell).
"""
import json
import pathlib
import re
import shlex
import sys

# The annotation keys the OCI image spec predefines (annotations.md).
OCI_KEYS = {"created", "authors", "url", "documentation", "source", "version", "revision", "vendor",
            "licenses", "ref.name", "title", "description", "base.digest", "base.name"}
OCI_REQUIRED = ("title", "description", "version", "revision", "created", "source")


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
        if not re.fullmatch(r"debian:bookworm(@sha256:[0-9a-f]{64})?", build["image"]):
            problems.append(f"build stage image is {build['image']}, expected debian:bookworm[@sha256:<digest>]")
        if runtime["image"] != "scratch":
            problems.append(f"runtime stage image is {runtime['image']}, expected scratch (binary + its libraries only)")
        build_runs = " ".join(r for _, i, r in build["ins"] if i == "RUN")
        for needle in ("cmake --preset release", "cmake --build --preset release", "ctest --preset release -L unit"):
            if needle not in build_runs:
                problems.append(f"build stage does not run `{needle}`")
        m = re.search(r"docker/rootfs\.sh\s+(\S+)\s+(\S+)", build_runs)
        if not m:
            problems.append("build stage does not collect the runtime file system with docker/rootfs.sh BINARY DIR")
        if any(i == "RUN" for _, i, _ in runtime["ins"]):
            problems.append("runtime stage has a RUN instruction: scratch has no shell to run it")
        last = {}
        for lineno, ins, rest in runtime["ins"]:
            last[ins] = (lineno, rest)
        copies = [r for _, i, r in runtime["ins"] if i == "COPY"]
        if not any(f"--from={build['name']}" in c for c in copies):
            problems.append(f"runtime stage does not COPY --from={build['name']}")
        elif m and not any(c.split()[1:2] and c.split()[1].rstrip("/") == m.group(2).rstrip("/") for c in copies
                           if c.startswith(f"--from={build['name']}")):
            problems.append(f"runtime stage does not COPY --from={build['name']} {m.group(2)} (what rootfs.sh wrote)")
        env = " ".join(r for _, i, r in runtime["ins"] if i == "ENV")
        if not re.search(r"\bPATH=(\S*:)?/usr/bin(:|\s|$)", env):
            problems.append("runtime stage must set ENV PATH=/usr/bin (scratch defines none; ENTRYPOINT and exec probes use it)")
        # OCI labels: the spec's keys only, the useful ones present.
        stage_args = {}
        for _, i, r in runtime["ins"]:
            if i == "ARG":
                k, _, v = r.partition("=")
                stage_args[k.strip()] = v.strip().strip('"')
        labels = {}
        for _, i, r in runtime["ins"]:
            if i == "LABEL":
                for tok in shlex.split(r):
                    k, _, v = tok.partition("=")
                    labels[k] = substitute(v, stage_args)
        for k in labels:
            if not k.startswith("org.opencontainers.image."):
                problems.append(f"label {k}: use the OCI annotation keys (org.opencontainers.image.*)")
            elif k.removeprefix("org.opencontainers.image.") not in OCI_KEYS:
                problems.append(f"label {k} is not a key the OCI image spec defines")
        for k in OCI_REQUIRED:
            if f"org.opencontainers.image.{k}" not in labels:
                problems.append(f"label org.opencontainers.image.{k} missing")
        cmake = pathlib.Path(path).resolve().parent.parent / "CMakeLists.txt"
        pm = re.search(r"project\(\s*mtlsd\s+VERSION\s+([0-9.]+)", cmake.read_text(encoding="utf-8")) if cmake.is_file() else None
        got_version = labels.get("org.opencontainers.image.version")
        if pm and got_version != pm.group(1):
            problems.append(f"label org.opencontainers.image.version defaults to {got_version!r}, CMakeLists.txt says {pm.group(1)}")
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
          f"unit tests and rootfs.sh in the build; runtime = that file system only; OCI labels; "
          f"numeric non-root USER; ENTRYPOINT/CMD/HEALTHCHECK as specified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
