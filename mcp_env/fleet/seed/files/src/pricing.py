"""Quote prices for wholesale orders (used by the sales team)."""

VOLUME_DISCOUNTS = [(500, 0.18), (200, 0.12), (50, 0.06)]


def quote(unit_price: float, units: int, vat_rate: float = 0.19) -> dict:
    discount = next((rate for threshold, rate in VOLUME_DISCOUNTS if units >= threshold), 0.0)
    net = round(unit_price * units * (1 - discount), 2)
    return {
        "units": units,
        "discount": discount,
        "net": net,
        "gross": round(net * (1 + vat_rate), 2),
    }


if __name__ == "__main__":
    print(quote(149.0, 240))
