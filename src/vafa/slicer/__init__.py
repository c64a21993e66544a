"""3D Slicer CLI modules: VAFA attack, VAFA evaluate and VAFT fine-tune.

``vafa slicer install DIR`` (:func:`vafa.slicer.install.install`) writes each module into DIR
as an executable that runs this Python environment (so Slicer uses the user's torch and GPU
without installing anything into Slicer's own Python) and its XML description, generated
from the attacks' option schemas (:mod:`vafa.slicer.modules`). Add DIR to Slicer's
*Additional module paths*.
"""
