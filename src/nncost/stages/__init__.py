"""The pipeline's stages (:mod:`nncost.pipeline`), one module each.

A stage module has ``wanted(request)``, whether the request asks for it, and
``add(source, result)``, which reads the request (``source.request``) and the sections before it
and returns the result with its own section added.  The source of a request
(:mod:`~nncost.stages.source`), its progress messages (:mod:`~nncost.stages.progress`) and the
guard of real runs (:mod:`~nncost.stages.real_run`) serve all of them.
"""
