"""Diffusion Desk. No arguments: the desktop app. `train`, `sample`, `bench`: the command line."""
import os
import sys

# On a 2-core machine a second torch process (or any busy program) makes OpenMP threads that
# spin-wait at barriers starve each other: a forward pass measured 1,361 ms with the default policy
# against 52 ms with PASSIVE while a training run shared the CPU. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main() -> int:
    argv = sys.argv[1:]
    if argv and argv[0] == "--self-test":
        from desktop.self_test import run_self_test  # packaged-app smoke test (build.spec, tools/build_app.py)
        return run_self_test(argv[1:])
    if not argv or argv[0].startswith("-psn_"):  # no arguments (macOS Finder adds -psn_...): the app
        try:
            from desktop.app import run_app
        except ImportError as e:
            print(f"error: the desktop app could not start ({e}); the command line works: python main.py --help",
                  file=sys.stderr)
            return 2
        return run_app(argv)
    from core.cli import main as cli_main
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
