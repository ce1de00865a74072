"""Deterministic generator of the two embedded skill datasets: `tool_use` and `extraction`.

Everything below was written by hand for this repository and is invented: the APIs, their functions and parameters,
towns, people, products and ids. Request and message templates are filled from hand-written value pools with a
seeded random generator, so running this module again writes byte-identical files (a test checks this):

    python -m data_prep.generate_skills

Files: tasks/embedded/tool_use/{train,val,test}.jsonl and tasks/embedded/extraction/{train,val,test}.jsonl
(schemas in the README.md next to them and in tasks/skills.py).
"""

from __future__ import annotations

import datetime
import json
import random
import string
from dataclasses import dataclass
from pathlib import Path

from tasks.skills import EMBEDDED, tool_call_text

SPLITS = ("train", "val", "test")
SEED = 20260417
ID_LETTER = {"train": "t", "val": "v", "test": "x"}  # as in the knowledge task

# --------------------------------------------------------------------------------------------------------------------
# Shared value pools (all invented).

TOWNS = ["Brackwell", "Tarnwick", "Ostelby", "Marrowgate", "Quenby", "Halvard Cross", "Pellory", "Drumsay",
         "Caddowmere", "Vessan", "Lorrick", "Sundhaven", "Ilverton", "Graystoke Bay", "Amberleigh", "Nethercombe"]
STATIONS = ["Kilnbrook", "Ashmoor Road", "Fenwick Square", "Tollgate", "Harrow Quay", "Mardle Park", "Cobble Lane",
            "Wrenfield", "Old Mint", "Ferrisdale", "Lantern Hill", "Pike Street"]
LINES = ["Red", "Amber", "Teal", "Violet", "14", "27", "9", "Harbour"]
TOPICS = ["beekeeping", "lighthouse history", "tidal energy", "clockmaking", "river ecology", "paper folding",
          "medieval glass", "orchard pests", "sea kayaking", "stone walls"]
AUTHORS = ["Marta Quillon", "Oren Tisdale", "Bea Hollowell", "Ivo Rankmere", "Sefa Dunmore", "Lior Padgett"]
TITLES = ["The Salt Orchard", "Lanterns of Ebbridge", "A Winter in Fallow", "Twelve Tin Boats",
          "The Glass Cartographer", "Notes from Hobb's Reach", "The Quiet Foundry", "Moths of the Upper Vale"]
BRANCHES = ["Eastfold", "Millbank", "Sorrel Street", "Harbourside", "Northgate", "Kestrel Row"]
INGREDIENTS = ["leeks", "chickpeas", "smoked trout", "parsnips", "oat groats", "red lentils", "fennel", "quince",
               "buckwheat", "celeriac"]
CURRENCIES = [("euros", "EUR"), ("US dollars", "USD"), ("Japanese yen", "JPY"), ("Swiss francs", "CHF"),
              ("British pounds", "GBP"), ("Canadian dollars", "CAD"), ("Norwegian kroner", "NOK")]
REGIONS = [("Europe", "europe"), ("Asia", "asia"), ("the Americas", "americas"), ("Africa", "africa"),
           ("Oceania", "oceania")]
EVENT_TITLES = ["Dentist check-up", "Quarterly review", "Choir rehearsal", "Bike repair", "Lunch with Imre",
                "Roof inspection", "Budget planning", "Piano lesson", "Team retro", "Allotment meeting"]
ADDRESSES = ["14 Gullhaven Road, Tarnwick", "3 Fernlow Court, Quenby", "88 Ostler Street, Pellory",
             "5 Brinewood Lane, Drumsay", "21 Cairnmoor Avenue, Vessan", "9 Thornby Mews, Lorrick",
             "40 Saltmarsh Row, Ilverton", "17 Heddon Place, Amberleigh"]
COUNTRIES = ["Norvania", "Eskaland", "Talmora", "Brevonia", "Qirenth", "Solvaria", "Dunmark", "Velisse"]
GENRES = ["jazz", "folk", "ambient", "synth-pop", "bluegrass", "lo-fi"]
SONG_QUERIES = ["rainy harbour", "night train", "copper moon", "slow river", "paper lanterns", "northern lights",
                "empty platform", "summer static"]
PLAYLIST_NAMES = ["Sunday Dishes", "Long Drive North", "Focus Mode", "Kitchen Disco", "Rainy Commute",
                  "Garden Evenings", "Study Hall", "Morning Run"]
UNITS = [("grams", "g"), ("kilograms", "kg"), ("ounces", "oz"), ("pounds", "lb"), ("millilitres", "ml"),
         ("litres", "l"), ("cups", "cup")]
WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine",
         10: "ten"}
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]


def ordinal(day: int) -> str:
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def date_surface(rng: random.Random, years=(2026, 2027)) -> tuple[str, str]:
    """A random date written the way people write it, and its ISO form (never the same string)."""
    date = datetime.date(rng.choice(years), rng.randint(1, 12), rng.randint(1, 28))
    month = MONTHS[date.month - 1]
    text = rng.choice([
        f"{date.day} {month} {date.year}",
        f"{month} {date.day}, {date.year}",
        f"{date.strftime('%A')} {date.day} {month} {date.year}",
        f"the {ordinal(date.day)} of {month} {date.year}",
    ])
    return text, date.isoformat()


def time_surface(rng: random.Random) -> tuple[str, str]:
    hour, minute = rng.randint(7, 20), rng.choice([0, 15, 30, 45])
    twelve = hour % 12 or 12
    half = "am" if hour < 12 else "pm"
    text = rng.choice([f"{twelve}:{minute:02d} {half}", f"{hour:02d}:{minute:02d}"] +
                      ([f"{twelve} {half}"] if minute == 0 else []))
    return text, f"{hour:02d}:{minute:02d}"


def count_surface(rng: random.Random, low: int, high: int) -> tuple[str, int]:
    value = rng.randint(low, high)
    return (WORDS[value] if value in WORDS and rng.random() < 0.5 else str(value)), value


def code(rng: random.Random, prefix: str, digits: int = 4) -> tuple[str, str]:
    value = f"{prefix}-{rng.randint(10 ** (digits - 1), 10 ** digits - 1)}"
    return value, value


def pick(pool):
    """A slot drawn from a pool of plain strings (surface text = argument value) or (surface, value) pairs."""
    def draw(rng: random.Random):
        choice = rng.choice(pool)
        return choice if isinstance(choice, tuple) else (choice, choice)
    return draw


def amount(choices):
    def draw(rng: random.Random):
        value = rng.choice(choices)
        return (f"{value:g}", value)
    return draw


# --------------------------------------------------------------------------------------------------------------------
# Tool use: eight invented APIs, three functions each, documented in ToolAlpaca's style.

@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # string | integer | number | boolean
    required: bool
    description: str


@dataclass(frozen=True)
class Function:
    name: str
    description: str
    params: tuple[Param, ...]
    templates: tuple[tuple[str, dict], ...]
    """(request text with {slot}s, {argument: slot name or ("const", value)}); every slot is drawn from SLOTS."""


def P(name, kind, required, description):
    return Param(name, kind, required, description)


SLOTS = {
    "town": pick(TOWNS), "days": lambda rng: count_surface(rng, 2, 7),
    "pollutant": pick([("pollen", "pollen"), ("ozone", "ozone"), ("fine dust (PM2.5)", "pm25")]),
    "date": date_surface, "topic": pick(TOPICS), "author": pick(AUTHORS), "title": pick(TITLES),
    "few": lambda rng: count_surface(rng, 3, 10), "book": lambda rng: code(rng, "QB"), "branch": pick(BRANCHES),
    "loan": lambda rng: code(rng, "LN", 5), "weeks": lambda rng: count_surface(rng, 2, 4),
    "station": pick(STATIONS), "station2": pick(STATIONS), "line": pick(LINES), "time": time_surface,
    "minutes": lambda rng: (lambda v: (str(v), v))(rng.choice([5, 8, 10, 12, 15, 20, 25, 30, 40, 45])),
    "ingredient": pick(INGREDIENTS), "cook": lambda rng: (lambda v: (str(v), v))(rng.choice([15, 20, 25, 30, 40, 45])),
    "recipe": lambda rng: code(rng, "MR", 3), "qty": amount([0.5, 1.5, 2, 3, 4, 250, 500, 750]),
    "unit": pick(UNITS), "unit2": pick(UNITS), "money": amount([20, 45, 75, 120, 250, 600, 1000, 1500, 2750]),
    "cur": pick(CURRENCIES), "cur2": pick(CURRENCIES),
    "curcode": lambda rng: (lambda c: (c[1], c[1]))(rng.choice(CURRENCIES)),
    "curcode2": lambda rng: (lambda c: (c[1], c[1]))(rng.choice(CURRENCIES)),
    "region": pick(REGIONS), "event": pick(EVENT_TITLES), "duration": amount([30, 45, 60, 90, 120]),
    "evid": lambda rng: code(rng, "EV"), "tracking": lambda rng: code(rng, "OP", 6), "address": pick(ADDRESSES),
    "weight": amount([0.5, 1, 2, 2.5, 4, 7.5, 12, 20]), "country": pick(COUNTRIES), "genre": pick(GENRES),
    "song": pick(SONG_QUERIES), "playlist": pick(PLAYLIST_NAMES), "plid": lambda rng: code(rng, "PL"),
    "track": lambda rng: code(rng, "TR", 5),
}

APIS: dict[str, tuple[Function, ...]] = {
    "weather": (
        Function("getForecast", "Get the daily weather forecast for a town.", (
            P("town", "string", True, "Name of the town."),
            P("days", "integer", False, "Number of days to forecast, 1 to 7. Default 3.")), (
            ("What will the weather be like in {town} over the next {days} days?", {"town": "town", "days": "days"}),
            ("What's the weather forecast for {town}?", {"town": "town"}),
            ("I'm hiking near {town} soon. Show me the forecast for the next {days} days.",
             {"town": "town", "days": "days"}),
            ("Could you check the forecast in {town} for me?", {"town": "town"}))),
        Function("getAirQuality", "Get the current air quality in a town.", (
            P("town", "string", True, "Name of the town."),
            P("pollutant", "string", False, "One of: pm25, ozone, pollen. Leave out for all of them.")), (
            ("How clean is the air in {town} right now?", {"town": "town"}),
            ("What is the {pollutant} level in {town} today?", {"town": "town", "pollutant": "pollutant"}),
            ("My daughter has asthma. How bad is the {pollutant} in {town} at the moment?",
             {"town": "town", "pollutant": "pollutant"}))),
        Function("getSunTimes", "Get sunrise and sunset times for a town on a given date.", (
            P("town", "string", True, "Name of the town."),
            P("date", "string", True, "The date, in YYYY-MM-DD format.")), (
            ("When does the sun set in {town} on {date}?", {"town": "town", "date": "date"}),
            ("What time is sunrise in {town} on {date}?", {"town": "town", "date": "date"}))),
    ),
    "library": (
        Function("searchBooks", "Search the Quillmark library catalogue.", (
            P("query", "string", True, "Title or keywords to search for."),
            P("author", "string", False, "Only books by this author."),
            P("maxResults", "integer", False, "How many results to return. Default 10.")), (
            ("Find books about {topic} in the library.", {"query": "topic"}),
            ("Do you have anything by {author} about {topic}?", {"query": "topic", "author": "author"}),
            ("Search the catalogue for \"{title}\" and show me at most {few} results.",
             {"query": "title", "maxResults": "few"}))),
        Function("reserveBook", "Reserve a book for pickup at a branch.", (
            P("bookId", "string", True, "Catalogue id, for example QB-1042."),
            P("branch", "string", True, "Name of the pickup branch.")), (
            ("Please reserve book {book} for me at the {branch} branch.", {"bookId": "book", "branch": "branch"}),
            ("Can I pick up {book} at {branch}? Put it on hold for me.", {"bookId": "book", "branch": "branch"}))),
        Function("renewLoan", "Extend one of your current loans.", (
            P("loanId", "string", True, "Loan id, for example LN-20417."),
            P("weeks", "integer", False, "Extra weeks, 1 to 4. Default 2.")), (
            ("Renew my loan {loan}, please.", {"loanId": "loan"}),
            ("Extend loan {loan} by {weeks} weeks.", {"loanId": "loan", "weeks": "weeks"}),
            ("I need {weeks} more weeks with the book on loan {loan}.", {"loanId": "loan", "weeks": "weeks"}))),
    ),
    "transit": (
        Function("getDepartures", "List the next departures from a Tallow Transit station.", (
            P("station", "string", True, "Station name."),
            P("line", "string", False, "Only this line, for example Red or 14."),
            P("limit", "integer", False, "Maximum number of departures. Default 5.")), (
            ("When are the next trains leaving {station}?", {"station": "station"}),
            ("Show me the next {few} departures on the {line} line from {station}.",
             {"station": "station", "line": "line", "limit": "few"}),
            ("Which {line} line trains leave {station} soon?", {"station": "station", "line": "line"}))),
        Function("planTrip", "Plan a journey between two stations.", (
            P("origin", "string", True, "Departure station."),
            P("destination", "string", True, "Arrival station."),
            P("arriveBy", "string", False, "Latest arrival time, HH:MM, 24-hour clock.")), (
            ("How do I get from {station} to {station2}?", {"origin": "station", "destination": "station2"}),
            ("I need to be at {station2} by {time}, leaving from {station}.",
             {"origin": "station", "destination": "station2", "arriveBy": "time"}),
            ("Plan a route from {station} to {station2} that gets me there by {time}.",
             {"origin": "station", "destination": "station2", "arriveBy": "time"}))),
        Function("reportDelay", "Report a delay you are experiencing on a line.", (
            P("line", "string", True, "Line name."),
            P("minutes", "integer", True, "Length of the delay in minutes.")), (
            ("The {line} line is running about {minutes} minutes late, please report it.",
             {"line": "line", "minutes": "minutes"}),
            ("Report a {minutes} minute delay on the {line} line.", {"line": "line", "minutes": "minutes"}))),
    ),
    "recipes": (
        Function("findRecipes", "Find Mossgrove recipes that use an ingredient.", (
            P("ingredient", "string", True, "Main ingredient."),
            P("maxMinutes", "integer", False, "Maximum total cooking time in minutes."),
            P("vegetarian", "boolean", False, "Only vegetarian recipes. Default false.")), (
            ("Find me a recipe with {ingredient}.", {"ingredient": "ingredient"}),
            ("I want a vegetarian dish with {ingredient} that takes at most {cook} minutes.",
             {"ingredient": "ingredient", "maxMinutes": "cook", "vegetarian": ("const", True)}),
            ("Any {ingredient} recipes I can make in {cook} minutes?",
             {"ingredient": "ingredient", "maxMinutes": "cook"}),
            ("Show me vegetarian recipes using {ingredient}.",
             {"ingredient": "ingredient", "vegetarian": ("const", True)}))),
        Function("getRecipe", "Get the full instructions of one recipe.", (
            P("recipeId", "string", True, "Recipe id, for example MR-305."),), (
            ("Show me the full recipe for {recipe}.", {"recipeId": "recipe"}),
            ("Open recipe {recipe}, I want to cook it tonight.", {"recipeId": "recipe"}))),
        Function("convertUnits", "Convert a kitchen quantity from one unit to another.", (
            P("amount", "number", True, "The quantity to convert."),
            P("fromUnit", "string", True, "One of: g, kg, oz, lb, ml, l, cup."),
            P("toUnit", "string", True, "One of: g, kg, oz, lb, ml, l, cup.")), (
            ("How many {unit2} is {qty} {unit}?", {"amount": "qty", "fromUnit": "unit", "toUnit": "unit2"}),
            ("Convert {qty} {unit} to {unit2}.", {"amount": "qty", "fromUnit": "unit", "toUnit": "unit2"}))),
    ),
    "money": (
        Function("convertCurrency", "Convert an amount of money with today's Ferrowind rate.", (
            P("amount", "number", True, "The amount to convert."),
            P("from", "string", True, "Three-letter currency code of the amount."),
            P("to", "string", True, "Three-letter currency code to convert to.")), (
            ("How much is {money} {cur} in {cur2}?", {"amount": "money", "from": "cur", "to": "cur2"}),
            ("Convert {money} {curcode} to {curcode2}.", {"amount": "money", "from": "curcode", "to": "curcode2"}),
            ("I have {money} {cur}. What is that in {cur2}?", {"amount": "money", "from": "cur", "to": "cur2"}))),
        Function("getRate", "Get the exchange rate between two currencies.", (
            P("base", "string", True, "Three-letter code of the currency you have."),
            P("quote", "string", True, "Three-letter code of the currency you want.")), (
            ("What's the exchange rate from {cur} to {cur2}?", {"base": "cur", "quote": "cur2"}),
            ("How many {cur2} do I get for one of my {cur}?", {"base": "cur", "quote": "cur2"}))),
        Function("listCurrencies", "List the currencies Ferrowind supports in a region.", (
            P("region", "string", True, "One of: europe, asia, americas, africa, oceania."),), (
            ("Which currencies do you support in {region}?", {"region": "region"}),
            ("List the currencies I can use in {region}.", {"region": "region"}))),
    ),
    "calendar": (
        Function("createEvent", "Add an event to your Pellucid calendar.", (
            P("title", "string", True, "Event title."),
            P("date", "string", True, "The date, in YYYY-MM-DD format."),
            P("time", "string", False, "Start time, HH:MM, 24-hour clock."),
            P("durationMinutes", "integer", False, "Length in minutes. Default 60.")), (
            ("Add \"{event}\" to my calendar on {date}.", {"title": "event", "date": "date"}),
            ("Schedule \"{event}\" on {date} at {time}.", {"title": "event", "date": "date", "time": "time"}),
            ("Put \"{event}\" in my calendar for {date}, starting {time}, for {duration} minutes.",
             {"title": "event", "date": "date", "time": "time", "durationMinutes": "duration"}))),
        Function("listEvents", "List the events on one day.", (
            P("date", "string", True, "The date, in YYYY-MM-DD format."),), (
            ("What's on my calendar on {date}?", {"date": "date"}),
            ("Do I have anything booked for {date}?", {"date": "date"}))),
        Function("deleteEvent", "Delete an event from your calendar.", (
            P("eventId", "string", True, "Event id, for example EV-2291."),), (
            ("Cancel event {evid}.", {"eventId": "evid"}),
            ("Please remove {evid} from my calendar, it was called off.", {"eventId": "evid"}))),
    ),
    "parcels": (
        Function("trackParcel", "Track an Orbisk parcel.", (
            P("trackingNumber", "string", True, "Tracking number, for example OP-204518."),), (
            ("Where is my parcel {tracking}?", {"trackingNumber": "tracking"}),
            ("Has {tracking} been delivered yet?", {"trackingNumber": "tracking"}))),
        Function("schedulePickup", "Book a courier to collect a parcel.", (
            P("address", "string", True, "Pickup address."),
            P("date", "string", True, "Pickup date, in YYYY-MM-DD format.")), (
            ("Can a courier collect a parcel from {address} on {date}?", {"address": "address", "date": "date"}),
            ("Book a pickup at {address} for {date}.", {"address": "address", "date": "date"}))),
        Function("estimateShipping", "Estimate the price of sending a parcel.", (
            P("weightKg", "number", True, "Weight in kilograms."),
            P("destination", "string", True, "Destination country."),
            P("express", "boolean", False, "Express delivery. Default false.")), (
            ("How much does it cost to send a {weight} kg box to {country}?",
             {"weightKg": "weight", "destination": "country"}),
            ("What would express shipping of a {weight} kg parcel to {country} cost?",
             {"weightKg": "weight", "destination": "country", "express": ("const", True)}),
            ("Price for a {weight} kg package to {country}, express please.",
             {"weightKg": "weight", "destination": "country", "express": ("const", True)}))),
    ),
    "music": (
        Function("searchTracks", "Search the Sablewood music catalogue.", (
            P("query", "string", True, "Words to search for."),
            P("genre", "string", False, "Only this genre."),
            P("limit", "integer", False, "Maximum number of tracks. Default 20.")), (
            ("Find songs called \"{song}\".", {"query": "song"}),
            ("Look for {genre} tracks matching \"{song}\".", {"query": "song", "genre": "genre"}),
            ("Give me {few} results for \"{song}\".", {"query": "song", "limit": "few"}))),
        Function("createPlaylist", "Create a new playlist.", (
            P("name", "string", True, "Playlist name."),
            P("public", "boolean", False, "Whether other people can see it. Default false.")), (
            ("Make a new playlist called \"{playlist}\".", {"name": "playlist"}),
            ("Create a public playlist named \"{playlist}\".", {"name": "playlist", "public": ("const", True)}))),
        Function("addToPlaylist", "Add a track to one of your playlists.", (
            P("playlistId", "string", True, "Playlist id, for example PL-5531."),
            P("trackId", "string", True, "Track id, for example TR-80412.")), (
            ("Add track {track} to playlist {plid}.", {"playlistId": "plid", "trackId": "track"}),
            ("Put {track} on my playlist {plid}, please.", {"playlistId": "plid", "trackId": "track"}))),
    ),
}

# ToolAlpaca's prompt, shortened: the tools, the call format, then the request.
TOOL_HEADER = "Answer the user's question with one of the available tools. You have access to the following tools:\n"
TOOL_FORMAT = ("Use the following format:\nAction: the action to take, one of the tools above\n"
               "Action Input: the input to the action, in JSON format")


def tool_documentation(functions: tuple[Function, ...]) -> str:
    """ToolAlpaca-style documentation: `name: description` then `Parameters: {json of "Required. type. text"}`."""
    blocks = []
    for function in functions:
        params = {p.name: ("Required. " if p.required else "") + f"{p.kind}. {p.description}" for p in function.params}
        blocks.append(f"{function.name}: {function.description}\nParameters: {json.dumps(params)}")
    return "\n".join(blocks)


def _fill(function: Function, template: tuple[str, dict], rng: random.Random) -> tuple[str, dict] | None:
    text, mapping = template
    slot_names = {name for _, name, _, _ in string.Formatter().parse(text) if name}
    draws = {slot: SLOTS[slot](rng) for slot in sorted(slot_names)}
    for first, second in (("station", "station2"), ("unit", "unit2"), ("cur", "cur2"), ("curcode", "curcode2")):
        if first in draws and second in draws and draws[first][1] == draws[second][1]:
            return None  # from X to X: draw again
    if {"unit", "unit2"} <= draws.keys() and ({draws["unit"][1], draws["unit2"][1]} & {"ml", "l", "cup"}
                                              and {draws["unit"][1], draws["unit2"][1]} & {"g", "kg", "oz", "lb"}):
        return None  # volume to mass is not a unit conversion
    request = text.format(**{slot: surface for slot, (surface, _) in draws.items()})
    arguments = {}
    for param in function.params:  # argument order follows the documentation
        if param.name in mapping:
            source = mapping[param.name]
            arguments[param.name] = source[1] if isinstance(source, tuple) else draws[source][1]
    return request, arguments


def tool_use_rows() -> dict[str, list[dict]]:
    """Per API: 15 examples, 5 per function; per API 9 train, 2 val, 4 test (the function without a val example
    rotates), so every function has 3 training examples and 1-2 test examples with new requests and argument values."""
    rng = random.Random(SEED)
    splits: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for api_number, (api, functions) in enumerate(APIS.items()):
        docs = tool_documentation(functions)
        for function_number, function in enumerate(functions):
            counts = {"train": 3, "val": 0, "test": 2} if function_number == api_number % 3 else \
                {"train": 3, "val": 1, "test": 1}
            seen_requests, seen_arguments, made = set(), [], []
            while len(made) < 5:  # example i uses template i (cyclically): train sees templates 0-2 first
                filled = _fill(function, function.templates[len(made) % len(function.templates)], rng)
                if filled is None or filled[0] in seen_requests or filled[1] in seen_arguments:
                    continue
                seen_requests.add(filled[0])
                seen_arguments.append(filled[1])
                made.append(filled)
            position = 0
            for split in ("train", "val", "test"):
                for k in range(1, counts[split] + 1):
                    request, arguments = made[position]
                    position += 1
                    splits[split].append({
                        "id": f"{api}-{function.name}-{ID_LETTER[split]}{k}",
                        "api": api,
                        "prompt": f"{TOOL_HEADER}{docs}\n{TOOL_FORMAT}\n\nQuestion: {request}",
                        "demonstration": tool_call_text(function.name, arguments),
                        "reference": {"action": function.name, "arguments": arguments},
                    })
    return splits


# --------------------------------------------------------------------------------------------------------------------
# Extraction: booking messages -> {"name", "date" (YYYY-MM-DD), "guests" (int), "city"}; the schema is never stated.

EXTRACTION_INSTRUCTION = "Extract the booking from this message.\n\nMessage: "
FIRST_NAMES = ["Tamsin", "Oriel", "Bastien", "Ilka", "Corvin", "Maelle", "Tobiah", "Wrenna", "Sorrel", "Jovan",
               "Petra", "Anselm", "Liesl", "Ravi", "Odile", "Fenn", "Marisol", "Ebbe", "Kasia", "Teodor"]
LAST_NAMES = ["Quell", "Marrowby", "Thistlecombe", "Vantreek", "Ashgrove", "Pellin", "Dunstray", "Okonedo",
              "Hallowmere", "Brisk", "Fairweather-Lund", "Castellane", "Moorcock", "Ibarrola", "Senn", "Wyndham"]
CITIES = ["Brackwell", "Tarnwick", "Ostelby", "Marrowgate", "Quenby", "Port Elsin", "Pellory", "Drumsay", "Caddowmere",
          "Vessan", "Lorrick", "Sundhaven", "Ilverton", "Amberleigh", "Nethercombe", "Halvard Cross"]

# {name}, {city}, {date}, {guests}; {other} (a second person) and {elsewhere} (a second city) are distractors.
MESSAGES = [
    "Hi, I'd like to book a table for {guests} at your {city} restaurant on {date}. The booking is under {name}. "
    "Thanks!",
    "Hello! Could you reserve a room for {guests} guests in {city} on {date}? Name: {name}.",
    "Good morning, this is {name}. We are {guests} people and would love to join the walking tour in {city} "
    "on {date}.",
    "Dear team, please hold {guests} seats for the pottery workshop in {city} on {date}. My colleague {other} "
    "recommended your studio. Kind regards, {name}",
    "Hey, can you fit {guests} of us in on {date}? It's for the {city} branch. Cheers, {name}",
    "I stayed at your {elsewhere} hotel last spring and loved it. This time I'd like a room in {city} on {date} "
    "for {guests} people. Best wishes, {name}",
    "Hi there, {name} here. A table for {guests} at the {city} location on {date}, please. We might bring a dog.",
    "We'd like to book the cooking class in {city} on {date}. There will be {guests} of us. "
    "Name for the booking: {name}.",
    "Please book the boat trip from {city} on {date} for {guests} adults. I am writing on behalf of {name}, "
    "who is travelling with {other}.",
    "Quick one: table for {guests} in {city}, {date}, name {name}. Thank you!",
    "Hello, {other} gave me your address. I'm {name} and I'd like to reserve the tasting menu in {city} "
    "for {guests} on {date}.",
    "Is there space for {guests} on the cheese tour in {city} on {date}? We are driving over from {elsewhere}. "
    "Regards, {name}",
]


def extraction_rows() -> dict[str, list[dict]]:
    """120 messages, 10 per template; per template 6 train, 1-2 val, 2-3 test (72 / 16 / 32)."""
    rng = random.Random(SEED + 1)
    splits: dict[str, list[dict]] = {split: [] for split in SPLITS}
    used_names, used_messages = set(), set()
    number = 0
    for template_number, template in enumerate(MESSAGES):
        val = 2 if template_number % 3 == 0 else 1  # 4 templates x 2 + 8 x 1 = 16
        counts = {"train": 6, "val": val, "test": 4 - val}
        for split, count in counts.items():
            for _ in range(count):
                while True:
                    name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
                    other = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
                    city, elsewhere = rng.sample(CITIES, 2)
                    date_text, iso = date_surface(rng)
                    guests_text, guests = count_surface(rng, 2, 9)
                    if name in used_names or other.split()[0] == name.split()[0]:
                        continue
                    message = template.format(name=name, other=other, city=city, elsewhere=elsewhere,
                                              date=date_text, guests=guests_text)
                    if message not in used_messages:
                        break
                used_names.add(name)
                used_messages.add(message)
                number += 1
                reference = {"name": name, "date": iso, "guests": guests, "city": city}
                splits[split].append({"id": f"booking-{number:03d}", "template": template_number + 1,
                                      "prompt": EXTRACTION_INSTRUCTION + message,
                                      "demonstration": json.dumps(reference), "reference": reference})
    return splits


def build() -> dict[Path, str]:
    """Every file this module writes, with its exact content."""
    files = {}
    for task, rows in (("tool_use", tool_use_rows()), ("extraction", extraction_rows())):
        for split, split_rows in rows.items():
            files[EMBEDDED / task / f"{split}.jsonl"] = "".join(json.dumps(row) + "\n" for row in split_rows)
    return files


def main() -> None:
    for path, text in build().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path} ({text.count(chr(10))} rows)")


if __name__ == "__main__":
    main()
