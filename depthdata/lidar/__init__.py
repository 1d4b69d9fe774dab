"""Synthetic sparse LiDAR (``docs/lidar.md``).

Modules: :mod:`.presets` (beam-model presets), :mod:`.config` (catalog settings), :mod:`.beams`
(the beam model a config names),:mod:`.camera` (intrinsics, back-projection, z-buffer), :mod:`.mesh` (grid and Poisson
meshing), :mod:`.raycast` (sensor pose, beams, Open3D ray casting), :mod:`.synth` (one image),
:mod:`.stage` (one shard). Light imports only here: the catalog imports :mod:`.config`, and
Open3D loads only with the modules that need it.
"""
