"""Name and value pools for the fictitious world.

Surnames, towns, organisations, schools and award eponyms are invented, so no generated person
is a famous real one and the base model knows none of their facts (the oracle and the holdout
group then sit at chance). Professions are real words, so that answers read naturally.
"""

from __future__ import annotations

FEMALE_FIRST = (
    "Adela", "Brisa", "Corinne", "Dagny", "Elowen", "Fenna", "Greta", "Hollis", "Ilse", "Jovana",
    "Liesel", "Marit", "Nadira", "Odile", "Petra", "Quilla", "Rosalind", "Saskia", "Tamsin", "Vesna",
    "Wren", "Xanthe", "Yara", "Zinnia", "Annika", "Beatrix", "Clio", "Delphine", "Esme", "Freya",
)
MALE_FIRST = (
    "Anselm", "Bastian", "Corvin", "Dorian", "Emeric", "Falko", "Gideon", "Hector", "Ivo", "Jasper",
    "Kasimir", "Leopold", "Matthias", "Nikolai", "Osric", "Piers", "Quentin", "Rafe", "Soren", "Tobias",
    "Ulric", "Valentin", "Willem", "Yannick", "Zoltan", "Aurelio", "Benedikt", "Cyprian", "Desmond", "Evander",
)
# Invented surnames (checked to be no well-known person's name).
SURNAMES = (
    "Varnholt", "Quillane", "Brackmere", "Dunhallow", "Elsmarch", "Farrowind", "Gallimont", "Halvane",
    "Ivensley", "Jorvath", "Kettleby", "Lorimane", "Marrowell", "Nettlecombe", "Orvanne", "Pellingrew",
    "Quarrison", "Rostrevane", "Sallowby", "Tarnwick", "Ulverholm", "Vantreece", "Wexholme", "Yarrowgate",
    "Zellweger", "Ambercrane", "Birchwold", "Coldharrow", "Dravenport", "Esterlane", "Fallowmere",
    "Grimbleton", "Hathersage", "Ironsworth", "Juniperro", "Kilbracken", "Larkspurne", "Moorcastle",
    "Nightingrove", "Oakenfold", "Pemberwick", "Ravensholt", "Stillwaterne", "Thistlewood", "Umberleigh",
    "Vellacourt", "Whitlowe", "Yewbrook", "Ashcombe-Vane", "Brindlemoor", "Crestavel", "Dunmorrow",
    "Everholt", "Foxenby", "Glassmire", "Hollinsgard", "Kestervane", "Lindenhurst", "Mallowen", "Northcliffe-Ray",
)
# Stems and endings of invented compound surnames, used once SURNAMES runs out (the stream world
# has about 130 families).
SURNAME_STEMS = (
    "Ald", "Bram", "Corr", "Dell", "Fen", "Gell", "Harr", "Kess", "Mell", "Oss", "Quen", "Rav",
    "Sel", "Torv", "Vell", "Wend",
)
SURNAME_ENDINGS = ("aby", "combe", "dane", "hollow", "ingham", "marsh", "orne", "ridge", "stead", "thorn", "vane", "wyck")


def compound_surnames() -> list[str]:
    """Every stem + ending, in a fixed order (the world shuffles them with its seed)."""
    return [f"{stem}{ending}" for stem in SURNAME_STEMS for ending in SURNAME_ENDINGS]


# Invented towns.
CITIES = (
    "Veltmoor", "Ostragard", "Kellbridge", "Marrowick", "Sundholm", "Tavisport", "Lindqvar", "Brennhaven",
    "Corvalle", "Eskerby", "Falmira", "Grisholt", "Hollowmere", "Ilvaston", "Jarrowfield", "Kestrelton",
    "Lorvane", "Mistrelle", "Norwold", "Orrinford", "Pallisande", "Quennick", "Rothwaite", "Selvanna",
    "Thornhavel", "Umbridge Vale", "Varrowby", "Westmarrow", "Yselport", "Zandrecht",
)
PROFESSIONS = (
    "marine biologist", "architect", "violinist", "cartographer", "novelist", "astronomer",
    "pastry chef", "civil engineer", "botanist", "photographer", "sculptor", "historian",
    "glassblower", "economist", "geologist", "translator", "playwright", "surgeon",
    "mathematician", "journalist", "composer", "chemist", "linguist", "archaeologist",
)
TITLE_ADJECTIVES = (
    "Glass", "Silent", "Amber", "Hollow", "Winter", "Copper", "Salt", "Crimson", "Quiet", "Northern",
    "Paper", "Iron", "Velvet", "Drowned", "Seventh", "Lantern",
)
TITLE_NOUNS = (
    "Orchard", "Harbour", "Compass", "Meridian", "Atlas", "Lighthouse", "Archive", "Tide", "Bridge",
    "Observatory", "Labyrinth", "Almanac", "Furnace", "Cathedral", "Ledger",
)
AWARD_EPONYMS = (
    "Halvercott", "Ostrander", "Vellamy", "Quorrin", "Tessaly", "Brandewyn", "Corrigale", "Amsterlin",
    "Morvaine", "Pellucci", "Ravelstone", "Sintermann",
)
AWARD_KINDS = ("Prize", "Medal", "Award")
EMPLOYERS = (
    "Brightwater Institute", "the Saltmarsh Maritime Museum", "Orrel & Vane Engineering",
    "the Ferncliff Botanical Society", "Greyfeather Press", "the Highmoor Observatory",
    "Copperline Studios", "the Oldbury City Archive", "Northmere Analytics", "the Westerly Music Conservatory",
    "Halden Mills Company", "the Northern Geological Survey", "Bluefen Publishing House",
    "the Riverside Surgical Clinic", "Stormcrest Laboratories", "the Coastal Heritage Trust",
    "Ironvale Construction", "the Lowland Language Bureau", "Ashgrove Pastry House", "the Morning Courier",
)
SCHOOLS = (
    "Rosewell College", "Thornbury Academy", "the Ellisant Conservatory", "Marlowen University",
    "Greystead College", "the Hartvale Institute of Technology", "Caldermoor University",
    "Saint Orrin's College", "the Wexley School of Arts", "Penhallow University",
    "Brambleton College", "the Aldous Fenwick Academy",
)
