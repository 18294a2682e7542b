"""`python -m catalens ...` (what torchrun starts for `catalens train --nproc N`)."""

from catalens.cli import main

main()
