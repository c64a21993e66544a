"""napari plugin for VAFA/VAFT: thin widgets over the :mod:`vafa` library."""

__all__: list[str] = []
