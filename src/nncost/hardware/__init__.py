"""Devices and their roofs: the datasheet catalogue and the calibrated ``cpu``."""

from nncost.hardware.catalogue import DTYPES, GENERIC, Device, catalogue_device, device, names

__all__ = ["DTYPES", "GENERIC", "Device", "catalogue_device", "device", "names"]
