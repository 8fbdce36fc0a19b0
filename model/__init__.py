"""Pure-numpy fully-connected nets in the cs231n assignment-2 style."""
