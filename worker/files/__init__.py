"""The filesystem connector's parts: names of any bytes, the listing walk, and safe bounded reads."""
