"""The pyfuse3 adapter: the only package that imports pyfuse3. It translates FUSE requests into
calls of the core and failures into errno values, and mounts."""
