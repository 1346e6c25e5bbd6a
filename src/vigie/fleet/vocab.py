"""Vocabularies and fleet parameters: models, firmware, countries, names, places."""

from __future__ import annotations

from dataclasses import dataclass

# (display, ascii for e-mail addresses)
_FIRST = (
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William "
    "Barbara Richard Susan Joseph Jessica Thomas Sarah Charles Karen Christopher Lisa "
    "Daniel Nancy Matthew Betty Anthony Sandra Mark Margaret Donald Ashley Steven "
    "Kimberly Andrew Emily Paul Donna Joshua Michelle Kenneth Carol Kevin Amanda Brian "
    "Melissa George Deborah Timothy Stephanie Ronald Rebecca Jason Sharon Edward Laura "
    "Jeffrey Cynthia Ryan Dorothy Jacob Amy Gary Kathleen Nicholas Angela Eric Shirley "
    "Jonathan Emma Stephen Brenda Larry Pamela Justin Nicole Scott Anna Brandon Samantha "
    "Benjamin Katherine Samuel Christine Gregory Debra Alexander Rachel Patrick Carolyn "
    "Frank Janet Raymond Maria Jack Olivia Dennis Heather Jerry Helen Tyler Catherine "
    "Aaron Diane Jose Julie Adam Victoria Nathan Joyce Henry Lauren Zachary Kelly Douglas "
    "Christina Peter Ruth Kyle Joan Noah Virginia Ethan Judith Jeremy Evelyn Walter Hannah "
    "Christian Andrea Keith Megan Roger Cheryl Terry Jacqueline Austin Madison Sean Teresa "
    "Gerald Abigail Carl Sophia Harold Martha Dylan Sara Arthur Gloria Lawrence Janice "
    "Jordan Kathryn Jesse Ann Bryan Isabella Billy Judy Bruce Charlotte Gabriel Julia "
    "Joe Grace Logan Amber Alan Alice Juan Denise Albert Danielle Willie Marilyn Elijah "
    "Beverly Wayne Natalie Randy Theresa Vincent Diana Mason Brittany Roy Doris Ralph "
    "Kayla Bobby Alexis Russell Lori Bradley Marie Philip Tiffany Eugene Liam Priya Wei "
    "Hiroshi Yuki Mohammed Fatima Lukas Lena Hugo Chloe Mateo Lucia Arjun Ananya"
)
FIRST_NAMES: tuple[tuple[str, str], ...] = (
    *((n, n) for n in _FIRST.split()),
    ("José", "jose"), ("Zoë", "zoe"), ("François", "francois"), ("Chloé", "chloe"),
)  # fmt: skip

_LAST = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez "
    "Lopez Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson "
    "White Harris Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright "
    "Scott Torres Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera Campbell "
    "Mitchell Carter Roberts Gomez Phillips Evans Turner Diaz Parker Cruz Edwards "
    "Collins Reyes Stewart Morris Morales Murphy Cook Rogers Gutierrez Ortiz Morgan "
    "Cooper Peterson Bailey Reed Kelly Howard Ramos Kim Cox Ward Richardson Watson "
    "Brooks Chavez Wood James Bennett Gray Mendoza Ruiz Hughes Price Alvarez Castillo "
    "Sanders Patel Myers Long Ross Foster Jimenez Powell Jenkins Perry Russell Sullivan "
    "Bell Coleman Butler Henderson Barnes Gonzales Fisher Vasquez Simmons Romero Jordan "
    "Patterson Alexander Hamilton Graham Reynolds Griffin Wallace Moreno West Cole Hayes "
    "Bryant Herrera Gibson Ellis Tran Medina Aguilar Stevens Murray Ford Castro Marshall "
    "Owens Harrison Fernandez McDonald Woods Washington Kennedy Wells Vargas Henry Chen "
    "Freeman Webb Tucker Guzman Burns Crawford Olson Simpson Porter Hunter Gordon Mendez "
    "Silva Shaw Snyder Mason Dixon Munoz Hunt Hicks Holmes Palmer Wagner Black Robertson "
    "Boyd Rose Stone Salazar Fox Warren Mills Meyer Rice Schmidt Garza Daniels Ferguson "
    "Nichols Stephens Soto Weaver Ryan Gardner Payne Grant Dunn Kelley Spencer Hawkins "
    "Arnold Pierce Vazquez Hansen Peters Santos Hart Bradley Knight Elliott Cunningham "
    "Duncan Armstrong Hudson Carroll Lane Riley Andrews Alvarado Ray Delgado Berry "
    "Perkins Hoffman Johnston Matthews Pena Richards Contreras Willis Carpenter Lawrence "
    "Sandoval Tanaka Sato Suzuki Wang Zhang Singh Kumar Schneider Fischer Dubois Rossi"
)
LAST_NAMES: tuple[tuple[str, str], ...] = (
    *((n, n) for n in _LAST.split()),
    ("Müller", "mueller"), ("Núñez", "nunez"), ("O'Brien", "obrien"), ("Søren", "soren"),
)  # fmt: skip

EMAIL_DOMAINS = (
    ("gmail.com", 0.45),
    ("yahoo.com", 0.11),
    ("hotmail.com", 0.09),
    ("outlook.com", 0.09),
    ("icloud.com", 0.13),
    ("aol.com", 0.03),
    ("proton.me", 0.03),
    ("comcast.net", 0.04),
    ("att.net", 0.03),
)

COUNTRIES = (  # (code, share, phone prefix, national digits)
    ("US", 0.62, "+1", 10),
    ("CA", 0.06, "+1", 10),
    ("GB", 0.07, "+447", 9),
    ("DE", 0.05, "+4915", 9),
    ("FR", 0.04, "+336", 8),
    ("AU", 0.03, "+614", 8),
    ("MX", 0.03, "+521", 10),
    ("BR", 0.03, "+5511", 9),
    ("IN", 0.03, "+91", 10),
    ("JP", 0.02, "+8190", 8),
    ("NL", 0.02, "+316", 8),
)


@dataclass(frozen=True)
class Model:
    name: str
    share: float
    oui: str  # the vendor prefix of its MAC addresses


MODELS = (
    Model("Vigil Cam v2", 0.38, "2C:AA:8E"),
    Model("Vigil Cam v3", 0.27, "7C:78:B2"),
    Model("Vigil Doorbell", 0.17, "D0:3F:27"),
    Model("Vigil Outdoor Pro", 0.12, "A4:DA:22"),
    Model("Vigil Pan Mini", 0.06, "3C:84:6A"),
)


@dataclass(frozen=True)
class Firmware:
    """A firmware release: rolled out in stages from ``release`` over ``duration``.

    ``release`` and ``duration`` are fractions of the generated window; negative
    releases happened before the window opened. ``error_rate`` is the chance that a
    connection attempt on this firmware fails.
    """

    version: str
    release: float
    duration: float
    error_rate: float


BASE_FIRMWARE = Firmware("3.8.4", -99.0, 0.0, 0.025)
FIRMWARE = (  # upgrades, in order
    Firmware("3.9.0", -7.0, 9.0, 0.022),
    Firmware("3.9.2", 0.15, 0.45, 0.095),  # the bad one: visibly higher error rate
    Firmware("3.9.3", 0.65, 0.30, 0.020),  # the hotfix
)
LAGGARD_SHARE = 0.08  # devices that stay offline for updates after 3.9.0
NOISY_SHARE = 0.01  # misbehaving cameras: 5x traffic, a third of attempts fail
NOISY_ERROR_RATE = 0.33

EVENT_KINDS = (("stream_start", 0.50), ("connect", 0.30), ("disconnect", 0.12), ("snapshot", 0.08))
APP_EVENT_KINDS = ("stream_start", "snapshot")
ERROR_CODES = ("TIMEOUT", "RELAY_UNAVAILABLE", "TLS_HANDSHAKE", "AUTH_FAILED", "DNS")
ERROR_WEIGHTS = (0.40, 0.25, 0.15, 0.12, 0.08)
BAD_FIRMWARE_ERROR_WEIGHTS = (0.20, 0.10, 0.60, 0.05, 0.05)
APP_VERSIONS = (("5.11.2", 0.15), ("5.12.0", 0.35), ("5.12.1", 0.50))
# Connection events per device per day, on average, and their spread over the UTC day
# (a US-heavy fleet: evenings in North America dominate).
EVENTS_PER_DEVICE_DAY = 3.0
DIURNAL = (
    1.30, 1.25, 1.15, 1.00, 0.85, 0.70, 0.55, 0.45, 0.40, 0.40, 0.45, 0.55,
    0.70, 0.85, 0.95, 1.00, 1.05, 1.10, 1.15, 1.20, 1.25, 1.35, 1.40, 1.35,
)  # fmt: skip

NICKNAMES = (
    "Front Door", "Backyard", "Living Room", "Garage", "Nursery", "Baby Room", "Kitchen",
    "Driveway", "Porch", "Office", "Basement", "Side Gate", "Dog Cam", "Hallway",
    "Bedroom", "Patio", "Pool", "Shop", "Barn", "Mailbox", "Cat Cam", "Upstairs",
)  # fmt: skip
SSID_TEMPLATES = (
    "{last} Family WiFi",
    "NETGEAR{d2}",
    "xfinitywifi-{last}",
    "Linksys{d5}",
    "ATT{d3}{L3}",
    "{first}'s iPhone",
    "TP-Link_{h4}",
    "MySpectrumWiFi{h2}-2G",
    "{last}-5G",
    "FBI Surveillance Van {d1}",
)
PROVIDERS = (("alexa", 0.60, 108), ("google", 0.30, 96), ("ifttt", 0.10, 64))
CARD_BRANDS = (("visa", 0.50), ("mastercard", 0.30), ("amex", 0.15), ("discover", 0.05))
