"""Checksums computed by chips and checked by their drivers."""


def crc8_sensirion(data: bytes) -> int:
    """CRC-8 of Sensirion chips: polynomial 0x31, init 0xFF, no reflection, no final XOR."""
    crc = 0xFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc
