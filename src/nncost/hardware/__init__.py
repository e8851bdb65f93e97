"""Devices and their roofs.

- ``catalogue``: the datasheet catalogue of named accelerators and their links (pure data, cited),
  and the :class:`Allocator` semantics of each kind of device;
- ``machine``: this machine's memory available now;
- ``calibration``: the ``cpu``, its roofs measured on this machine, checked and cached.  It runs a
  capture and its analyses, so it sits above them and is never imported from here: importing
  the catalogue imports no capture.  ``calibration.resolve_device`` is the one resolver of a
  device name, ``cpu`` included.
"""

from nncost.hardware.catalogue import ALLOCATORS, DTYPES, Allocator, Device, RingCollectives, catalogue_device, names

__all__ = ["ALLOCATORS", "DTYPES", "Allocator", "Device", "RingCollectives", "catalogue_device", "names"]
