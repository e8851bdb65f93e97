"""Devices and their roofs: the datasheet catalogue (the calibrated ``cpu`` is ``nncost.calibration``)."""

from nncost.hardware.catalogue import DTYPES, GENERIC, Device, catalogue_device, names

__all__ = ["DTYPES", "GENERIC", "Device", "catalogue_device", "names"]
