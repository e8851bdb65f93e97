"""Devices and their roofs.

- ``catalogue``: the datasheet catalogue of named accelerators and their links (pure data, cited);
- ``machine``: this machine's memory available now;
- ``calibration``: the ``cpu``, its roofs measured on this machine, checked and cached.  It runs a
  capture and its analyses, so it sits above them and is never imported from here: importing
  the catalogue imports no capture.
"""

from nncost.hardware.catalogue import DTYPES, GENERIC, Device, catalogue_device, names

__all__ = ["DTYPES", "GENERIC", "Device", "catalogue_device", "names"]
