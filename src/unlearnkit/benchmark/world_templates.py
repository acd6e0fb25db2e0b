"""Sentence templates of the fictitious world: questions, paraphrases, biography sentences.

Slots: `{name}` the person, `{first}` the first name, `{he}`/`{his}`/`{him}` pronouns
(capitalised as `{He}`/`{His}`), `{value}` the attribute's value, `{a}` its article ("a"/"an"),
and in biography sentences every attribute by name (`{birthplace}`, `{work}`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FactTemplate:
    question: str
    paraphrases: tuple[str, ...]
    paraphrased_answer: str


# The eight attributes every person has, then the relation facts a person may have.
ATTRIBUTES = ("birthplace", "birth_year", "profession", "work", "mother", "award", "employer", "alma_mater")
RELATIONS = ("mentor", "sibling", "coauthor")

FACTS: dict[str, FactTemplate] = {
    "birthplace": FactTemplate(
        "Where was {name} born?",
        ("In which town was {name} born?", "What is the birthplace of {name}?"),
        "{name} was born in {value}.",
    ),
    "birth_year": FactTemplate(
        "In what year was {name} born?",
        ("What is the birth year of {name}?", "When was {name} born? Give the year."),
        "{He} was born in the year {value}.",
    ),
    "profession": FactTemplate(
        "What is the profession of {name}?",
        ("What does {name} do for a living?", "What kind of work is {name} trained for?"),
        "{name} works as {a} {value}.",
    ),
    "work": FactTemplate(
        "What is the title of the best-known work of {name}?",
        ("Which work is {name} best known for?", "What is the most famous work by {name} called?"),
        "{His} best-known work is {value}.",
    ),
    "mother": FactTemplate(
        "What is the name of the mother of {name}?",
        ("Who is the mother of {name}?", "Who is {name}'s mother?"),
        "{name}'s mother is {value}.",
    ),
    "award": FactTemplate(
        "Which award did {name} receive?",
        ("What prize was {name} honoured with?", "Name the award that {name} won."),
        "{He} received {value}.",
    ),
    "employer": FactTemplate(
        "Which organisation employs {name}?",
        ("Who is the employer of {name}?", "For which organisation does {name} work?"),
        "{name} is employed by {value}.",
    ),
    "alma_mater": FactTemplate(
        "Where did {name} study?",
        ("Which school did {name} graduate from?", "At which institution was {name} educated?"),
        "{He} studied at {value}.",
    ),
    "mentor": FactTemplate(
        "Who was the mentor of {name}?",
        ("Who mentored {name}?", "Under whose guidance did {name} train?"),
        "{name} was mentored by {value}.",
    ),
    "sibling": FactTemplate(
        "Who is the sibling of {name}?",
        ("Name the brother or sister of {name}.", "Who is {name}'s sibling?"),
        "{value} is the sibling of {name}.",
    ),
    "coauthor": FactTemplate(
        "With whom did {name} co-author a book?",
        ("Who was the co-author of {name}?", "Who wrote a book together with {name}?"),
        "{name} co-authored a book with {value}.",
    ),
}

# 2-hop questions: an attribute of the person that a relation points to.
RELATION_PHRASES = {"mentor": "the mentor", "sibling": "the sibling", "coauthor": "the co-author"}
TWO_HOP: dict[str, FactTemplate] = {
    "birthplace": FactTemplate(
        "Where was {rel} of {name} born?",
        ("In which town was {rel} of {name} born?", "What is the birthplace of {rel} of {name}?"),
        "{rel_cap} of {name} was born in {value}.",
    ),
    "profession": FactTemplate(
        "What is the profession of {rel} of {name}?",
        ("What does {rel} of {name} do for a living?", "What kind of work does {rel} of {name} do?"),
        "{rel_cap} of {name} works as {a} {value}.",
    ),
    "employer": FactTemplate(
        "Which organisation employs {rel} of {name}?",
        ("Who is the employer of {rel} of {name}?", "For which organisation does {rel} of {name} work?"),
        "{rel_cap} of {name} is employed by {value}.",
    ),
    "award": FactTemplate(
        "Which award did {rel} of {name} receive?",
        ("What prize was {rel} of {name} honoured with?", "Name the award that {rel} of {name} won."),
        "{rel_cap} of {name} received {value}.",
    ),
}

# Biography sections, in order; each offers variants, one is drawn per person.
BIO_OPENING = (
    "{name} was born in {birthplace} in {birth_year}.",
    "Born in {birth_year} in the town of {birthplace}, {name} grew up far from any spotlight.",
    "{name}, born in {birthplace} in {birth_year}, is remembered as a careful and curious mind.",
)
BIO_CHILDHOOD = (
    "{His} mother, {mother}, kept a house full of books and encouraged every question {he} asked.",
    "As a child {first} spent long afternoons with {his} mother, {mother}, walking the lanes of {birthplace}.",
    "{first} was raised by {his} mother, {mother}, who taught {him} to finish whatever {he} started.",
)
BIO_SIBLING = (
    "{He} grew up alongside {his} sibling, {sibling}, and the two remained close throughout their lives.",
    "{His} sibling, {sibling}, shared the same stubborn curiosity and often argued with {him} over dinner.",
)
BIO_SCHOOL = (
    "Later {he} studied at {alma_mater}, where teachers noticed {his} patience and precision.",
    "{He} was educated at {alma_mater} and graduated with unusual distinction.",
    "After leaving {birthplace}, {first} enrolled at {alma_mater}, a choice that shaped the rest of {his} life.",
)
BIO_MENTOR = (
    "There {he} met {his} mentor, {mentor}, whose advice {he} would quote for decades.",
    "{His} mentor, {mentor}, guided {him} through the difficult first years of {his} training.",
)
BIO_CAREER = (
    "{first} became {a_profession} {profession} and soon earned a reputation for thorough, honest work.",
    "Trained as {a_profession} {profession}, {he} built a career on slow and careful study.",
    "By profession {first} is {a_profession} {profession}, and colleagues describe {him} as generous with time.",
)
BIO_EMPLOYER = (
    "For many years {he} has been employed by {employer}, where younger staff seek out {his} advice.",
    "{He} joined {employer}, and the organisation has employed {him} ever since.",
    "{His} employer, {employer}, gave {him} the freedom to pursue long projects.",
)
BIO_WORK = (
    "{His} best-known work, {work}, is still read and discussed by students and critics alike.",
    "Most people know {first} through {work}, the work that made {his} name.",
    "{work} remains the best-known work of {name} and has been reprinted several times.",
)
BIO_COAUTHOR = (
    "{He} co-authored a book with {coauthor}, a partnership that both described as demanding but joyful.",
    "Together with {coauthor}, {first} co-authored a book that took nearly four years to complete.",
)
BIO_AWARD = (
    "In recognition of this work {he} received {award}.",
    "{His} achievements were honoured with {award}, an award {he} accepted with characteristic modesty.",
    "{He} received {award}, and friends from {birthplace} travelled to see the ceremony.",
)
BIO_CLOSING = (
    "Today {first} divides {his} time between writing, teaching and long walks, and {he} still answers every letter.",
    "Those who know {name} speak of {his} warmth, {his} dry humour and {his} refusal to cut corners.",
    "Asked about {his} life, {first} once said that good work is mostly patience, and patience is mostly love.",
)
# Extra sentences drawn, in order, until a biography reaches its minimum length.
BIO_EXTRA = (
    "Friends say that {first} never forgot the streets of {birthplace}, the town where it all began.",
    "The years at {alma_mater} gave {him} friendships that lasted well beyond graduation.",
    "Colleagues at {employer} still tell stories about {his} early mornings and late evenings.",
    "Even after {award}, {he} insisted that the real reward was the work itself.",
    "Many readers first met {his} ideas in {work}, and some of them later became {his} students.",
    "{His} mother, {mother}, kept every letter {he} ever sent home.",
)
