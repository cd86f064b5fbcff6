"""The words of a delivery address the offline recogniser can hear.

A recogniser with a language model hears only word sequences its model
knows, so the order line's address model (``pipelines.orderline.asr``) is
built from these lists: house numbers 1 to 9999 in the ways people say
them, a few hundred common street names, the street types and towns. An
address outside them ("17 Quetzal Close, Llanfair") is not heard as said:
the agent reads back what it heard and the caller can correct it.

Every word is in the CMU pronunciation dictionary shipped with pocketsphinx,
lower case, one word per name (tests/test_asr.py checks, and that the names
are apart).
"""

from __future__ import annotations

from pipeflow.asr.corpus import number_words

__all__ = ["HOUSE_NUMBERS", "STREET_NAMES", "STREET_TYPES", "TOWNS", "house_number_words"]

def _names(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(text.split()))


HOUSE_NUMBERS = range(1, 10000)
"""House numbers the address model knows."""

STREET_NAMES = _names("""
main oak maple elm cedar park washington lincoln market first second third fourth sixth seventh
ninth spring river water bridge south union franklin jefferson madison jackson adams monroe
walnut cherry chestnut willow poplar sycamore hickory magnolia laurel holly dogwood juniper
redwood aspen locust beech hemlock linden ivy daisy violet tulip orchard meadow forest grove
summit highland sunset sunrise lakeview hillside riverside fairview pleasant prospect liberty
independence harmony grant sherman wilson taylor johnson king hamilton morgan carter cooper
hudson spencer webster railroad college school academy garden creek stone mountain canyon
desert ocean marina country colonial heritage woodland oakwood elmwood maplewood wildwood
greenwood kingston princeton cambridge oxford windsor lancaster bristol salem kent sussex
jasmine lavender clover heather ridgeway commerce industrial airport depot canal hospital
museum temple butler hughes jordan kennedy lewis marshall murphy nelson powell roberts russell
stewart watson wright campbell davis edwards harris hunter martin cottonwood bluebird robin
sparrow falcon fox buffalo pioneer frontier evergreen timber golden diamond emerald ruby
sapphire canterbury hampton sheffield stratford roosevelt truman garfield mckinley cleveland
fillmore buchanan eisenhower patterson anderson thompson robinson richardson henderson sanders
hayward gardner woodward preston ashford bradford hartford milford gibson bishop chandler
fleming douglas montgomery sullivan vincent benson bradley dawson hamlin
""")
"""Street names, said before a street type ("maple avenue"): common ones, each
at least two sounds apart from every other (three when one is short: "main"
but not "wayne", "cherry" but not "kelly"), so that one is not heard for another."""

STREET_TYPES = ("street", "avenue", "road", "lane", "drive", "way", "boulevard", "court",
                "place", "terrace", "parkway", "circle")
"""Street types; each ends the street name."""

TOWNS = _names("""
springfield riverside franklin greenville fairview madison georgetown salem clinton bristol
chester oxford arlington ashland auburn bedford burlington camden canton centerville clayton
dover fairfield florence hudson jackson jamestown kingston lebanon lexington manchester marion
milford milton newport oakland princeton richmond shelby troy union vernon warren washington
winchester hamilton lancaster columbia dallas boston portland phoenix seattle atlanta houston
chicago
""")
"""Towns, said after the street, kept apart like the street names ("boston", not "austin")."""


def house_number_words(n: int) -> list[str]:
    """The ways a house number is said: ``1234`` -> "one thousand two hundred and thirty
    four", "... thirty four" without "and", "twelve thirty four", "one two three four".

    Raises:
        ValueError: ``n`` is not 1 to 9999.
    """
    if n not in HOUSE_NUMBERS:
        raise ValueError(f"house numbers are 1 to 9999, got {n}")
    full = number_words(n)
    forms = [full, full.replace(" and ", " ")]
    if n >= 100:
        head, tail = divmod(n, 100)
        if tail == 0:
            forms.append(f"{number_words(head)} hundred")
        elif tail < 10:
            forms.append(f"{number_words(head)} oh {number_words(tail)}")
        else:
            forms.append(f"{number_words(head)} {number_words(tail)}")
        forms.append(" ".join("oh" if d == "0" else number_words(int(d)) for d in str(n)))
    return list(dict.fromkeys(forms))
