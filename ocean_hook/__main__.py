"""`python -m ocean_hook`: the same command as the `ocean-hook` script."""

from ocean_hook.cli import main

main()
