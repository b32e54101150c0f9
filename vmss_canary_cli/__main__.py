"""``python -m vmss_canary_cli``: the same as the ``vmss-canary`` console script."""

from vmss_canary_cli import main

main()
