import gc
import sys

gc.disable()                # until the model is loaded: runtime.cli.loaded

from runtime.cli import main  # noqa: E402  (after gc.disable: the imports are what it saves)

sys.exit(main())
