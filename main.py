"""Diffusion Desk. No arguments: the desktop app. `train`, `sample`, `bench`: the command line."""
import sys

# OpenMP's wait policy is left at its default (spin, then sleep): on an otherwise idle machine
# OMP_WAIT_POLICY=PASSIVE makes every forward pass slower. When another torch process shares the CPU,
# spinning threads starve each other: set OMP_WAIT_POLICY=PASSIVE yourself then; the app adapts its
# thread count instead (core.threads). The figures: docs/benchmarks.md, "Training on a busy machine".


def main() -> int:
    argv = sys.argv[1:]
    if argv and argv[0] == "--self-test":
        from desktop.diagnostics.self_test import run_self_test  # the packaged app's smoke test (build_app.py)
        return run_self_test(argv[1:])
    if not argv or argv[0].startswith("-psn_"):  # no arguments (macOS Finder adds -psn_...): the app
        from desktop.platform_check import display_problem

        problem = display_problem()  # Qt would abort (exit 134) with a misleading message
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
        try:
            from desktop.app import run_app
        except ImportError as e:
            print(f"error: the desktop app could not start ({e}); the command line works: python main.py --help",
                  file=sys.stderr)
            return 2
        return run_app(argv)
    from cli import main as cli_main
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
