# Makes the top-level packages (DataSet, losses, models, ...) importable from tests/.
