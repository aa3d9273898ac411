"""The ``fedkit`` console script: ``run``, ``bench``, ``tables`` (and ``deploy``, which hands
over to :mod:`experiments.deploy_cli`; ``audit``, to :mod:`experiments.audit_cli`).

It lives here rather than in ``fedkit`` so that the core never imports the suites
(docs/architecture.md): ``fedkit = "experiments.cli:main"``. Each subcommand imports its module only
when it runs, so ``fedkit tables`` does not pay for Hydra or a simulation.
"""

from __future__ import annotations

import sys

USAGE = """\
usage: fedkit <command> [...]

commands:
  run [OVERRIDE ...] [-m]     one simulation from the Hydra config tree, e.g.
                                fedkit run task=digits server=krum attack=alie chaos=dropout seed=1
                              or a multirun (joblib launcher, 2 jobs at a time):
                                fedkit run -m seed=0,1,2 server=mean,krum
                              on any Hydra launcher (docs/sweeps.md): hydra/launcher=
                                basic | submitit_local | slurm | ray_cluster
                              (Hydra's flags work: --help, --cfg job, --info, ...)
  bench [--quick] [--out DIR] [--jobs N] [--sweep FILE] [OVERRIDE ...]
                              the default benchmark: runs, TensorBoard logs, tables, figures
  deploy local --nodes N [--insecure] [--no-auth] [--resume] [OVERRIDE ...]
                              the same config on a real Flower deployment on this machine
                              (TLS + node auth by default), e.g.
                                fedkit deploy local --nodes 5 task=digits defense=krum \
                                  attack=sign_flip rounds=3 out_dir=runs/krum
  deploy sim [--nodes N] [--cpus C] [--ray-address HOST:PORT] [OVERRIDE ...]
                              the same config on Flower's simulation engine (Ray; a
                              running Ray cluster with --ray-address)
  tables RESULTS_DIR [--out DIR] [--no-figures]
                              LaTeX / Markdown / CSV tables and PDF / PNG figures from records
  audit privacy [OVERRIDE ...] [--method both|one-run|many-run] [--broken-example] [...]
                              an empirical lower bound on the ε a config claims (canaries)
  audit verify LOG [--record RECORD] [--allow-torn]
                              check a run's hash-chained audit log (exit 1 names the first bad line)

See experiments/README.md.
"""


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv`` (default ``sys.argv[1:]``) to a subcommand; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "run":
        from experiments.run import main as run_main

        run_main(rest)
        return 0
    if command == "bench":
        from experiments.bench import main as bench_main

        return bench_main(rest)
    if command == "deploy":
        from experiments.deploy_cli import main as deploy_main

        return deploy_main(rest)
    if command == "tables":
        from paper.cli import main as tables_main

        return tables_main(rest)
    if command == "audit":
        from experiments.audit_cli import main as audit_main

        return audit_main(rest)
    print(f"fedkit: unknown command {command!r}\n\n{USAGE}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
