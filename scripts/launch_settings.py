"""Variants of a launcher's module constants for the device development scripts."""


def apply_variant(module, defaults: dict, variant: str, own: tuple[str, ...] = ("CHECK", "SHAPES")) -> dict:
    """Reset `module`'s constants to `defaults`, then apply `NAME=VALUE;NAME=VALUE`: a
    value is a Python expression in the module's names, or a bare string; a dict
    updates the default table (`{128: (32, 64, 4, 2)}` changes one entry). Names in
    `own` belong to the calling script and are only returned. Returns the settings."""
    for name, value in defaults.items():
        setattr(module, name, value)
    settings = {}
    for item in filter(None, variant.split(";")):
        name, text = item.split("=", 1)
        settings[name] = text
        if name in own:
            continue
        try:
            value = eval(text, vars(module))
        except NameError:
            value = text
        if isinstance(value, dict) and isinstance(defaults.get(name), dict):
            value = {**defaults[name], **value}
        setattr(module, name, value)
    return settings
