"""The core of the mount: the namespace of purposes and names, the content caches, the spool
and the uploads. Knows nothing of FUSE (see the module map in README.md, "Hacking")."""
