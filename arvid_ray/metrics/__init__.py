"""Quality metrics on decoded pixels: Fréchet distance and KVD (``frechet``), feature extractors
(``extractors``: TorchScript I3D by local path, built-in SynthC3D), temporal consistency (``consistency``).

Submodules are imported explicitly (``from arvid_ray.metrics.frechet import ...``) so that importing the
package stays cheap.
"""
