"""Outputs: OpenVDB volumes (`vdb`), meshes (`mesh`) and preview images (`preview`) of a `Level`.

Submodules are imported on demand (``from xcube_core.io import vdb``) so that importing the package
stays cheap; OpenVDB itself is located by `openvdb_locator`.
"""
