"""``python -m rnnlimit``: the same command line as the ``rnnlimit`` script."""

from rnnlimit.cli import main

if __name__ == "__main__":
    main()
