"""A seeded generator of synthetic archives of clinic notes and imaging orders: the benchmark's and the
bundled sample's (`corpora/sample/`).

    python3 benchmarks/generate.py --notes 10000 --out benchmarks/.work/archive-10000
    python3 benchmarks/generate.py --profile sample --notes 2000 --seed 2025 --gzip --out corpora/sample

writes `notes.csv` (note_id, patient_id, note_date, encounter_id, text) and `orders.csv` (order_id,
patient_id, encounter_id, note_id, order_date, description, cpt, priority, provider, site) and prints the
note length distribution. Notes are composed from section templates in several styles (terse ED and
urgent-care notes, telephone triage, long templated primary-care notes with copy-forward blocks, spine
clinic, PT evaluations, admission H&Ps, general visits that are not about the back). Most visits are
uncomplicated; red flags and the traps of the annotated corpus (negated ROS lists, return precautions,
family history, strength grades, post-op histories, ...) come at a low, realistic rate. Padding (vitals,
medication lists, labs, boilerplate) brings the lengths to 300-8,000 characters, median about 2,500.

A profile says what the archive looks like around the notes: the date range, visits per patient, the case
mix, how often each case is imaged and by whom. `benchmark` (the default) spreads visits over 2014-2024 with
random providers and sites. `sample` is the bundled sample: visits from 2023-01-01 to 2025-12-31, about
1.4 notes a patient, a roster of ordering providers with home sites, uneven volumes and two providers who
image uncomplicated backs more often, non-lumbar orders that fit the visit, and orders whose visit note is
not in the archive. `--gzip` writes `notes.csv.gz` and `orders.csv.gz`, byte for byte the same each time.

Each patient's notes come from a random generator seeded by (seed, patient number): the same seed and
profile give the same archive, and a smaller archive is the first notes of a larger one.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import gzip
import io
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

NOTE_FIELDS = ("note_id", "patient_id", "note_date", "encounter_id", "text")
ORDER_FIELDS = ("order_id", "patient_id", "encounter_id", "note_id", "order_date", "description", "cpt",
                "priority", "provider", "site")
MIN_CHARS, MAX_CHARS, MEDIAN_CHARS = 300, 8000, 2500
LENGTH_SIGMA = 0.62  # spread of the log-normal length target
EPOCH = dt.date(2014, 1, 1)
REFERENCE_DAY = dt.date(2024, 6, 30)  # "today" for the dates in the benchmark's padding blocks

# --- the visit mix: (case, weight). Most visits are uncomplicated. ---------------------------------------
CASES = (
    ("general", 24), ("mechanical", 42), ("radicular", 13), ("chronic", 7), ("weakness", 2.5),
    ("foot_drop", 1.2), ("ces", 0.9), ("cancer", 2.6), ("infection", 1.0), ("fracture", 2.8),
    ("postop", 3.0),
)
STYLES_BY_LENGTH = (  # (upper bound of the length target, styles to pick from with weights)
    (800, (("terse_ed", 4), ("telephone", 3), ("urgent_care", 3))),
    (1600, (("ed", 4), ("urgent_care", 2), ("pt", 2), ("spine", 2), ("telephone", 1))),
    (3200, (("primary_care", 5), ("ed", 3), ("spine", 2), ("pt", 2), ("admission", 1))),
    (MAX_CHARS + 1, (("primary_care", 6), ("admission", 2), ("spine", 1), ("pt", 1))),
)
SITES = ("North", "South", "Riverside", "Downtown", "Lakeview", "West Campus")
PROVIDERS = tuple(f"Dr {a}" for a in ("Abbott", "Baker", "Chen", "Diaz", "Evans", "Fischer", "Gupta", "Hughes",
                                       "Ibrahim", "Jensen", "Kowalski", "Lopez", "Mensah", "Nguyen", "Okafor",
                                       "Patel", "Quinn", "Rossi", "Singh", "Tanaka", "Varga", "Walsh"))
OCCUPATIONS = ("warehouse worker", "teacher", "nurse", "retired", "truck driver", "office manager", "student",
               "construction worker", "cashier", "software developer", "mechanic", "home health aide",
               "accountant", "landscaper", "chef", "unemployed", "electrician", "postal worker", "paralegal")
PMH_POOL = ("HTN", "hyperlipidemia", "T2DM", "GERD", "hypothyroidism", "asthma", "depression", "anxiety",
            "obesity", "OSA on CPAP", "CKD stage 3", "osteoarthritis of the knees", "migraine", "BPH",
            "atrial fibrillation", "COPD", "gout", "seasonal allergies", "iron deficiency anemia", "IBS")
PSH_POOL = ("appendectomy", "cholecystectomy", "tonsillectomy", "C-section", "R knee arthroscopy",
            "inguinal hernia repair", "hysterectomy", "carpal tunnel release", "ORIF L wrist", "colonoscopy")
MED_POOL = ("lisinopril 20 mg daily", "amlodipine 5 mg daily", "atorvastatin 40 mg nightly",
            "metformin 1000 mg BID", "levothyroxine 75 mcg daily", "omeprazole 20 mg daily",
            "sertraline 50 mg daily", "albuterol HFA 2 puffs q4-6h prn", "hydrochlorothiazide 25 mg daily",
            "losartan 50 mg daily", "metoprolol succinate 50 mg daily", "gabapentin 300 mg TID",
            "acetaminophen 500 mg q6h prn", "ibuprofen 600 mg TID prn", "cetirizine 10 mg daily",
            "fluticasone nasal spray daily", "tamsulosin 0.4 mg nightly", "apixaban 5 mg BID",
            "allopurinol 100 mg daily", "vitamin D3 2000 IU daily", "escitalopram 10 mg daily",
            "pantoprazole 40 mg daily", "insulin glargine 20 units nightly", "montelukast 10 mg nightly",
            "trazodone 50 mg qhs prn", "cyclobenzaprine 5 mg qhs prn", "naproxen 500 mg BID prn",
            "aspirin 81 mg daily", "furosemide 20 mg daily", "bupropion XL 150 mg daily")
ALLERGIES = ("NKDA", "NKDA", "NKDA", "No Known Allergies", "penicillin (rash)", "sulfa (hives)",
             "codeine (nausea)", "iodinated contrast (hives)", "latex", "NSAIDs (GI upset)")
FAMILY = ("mother with HTN and T2DM", "father with CAD, MI at 62", "noncontributory",
          "mother with breast cancer", "father with prostate cancer", "sister with lupus",
          "mother with osteoporosis", "brother with colon cancer at 55", "no family history of cancer",
          "father with lumbar spinal stenosis s/p laminectomy", "parents alive and well")
CANCERS = ("breast cancer s/p lumpectomy and radiation {y}", "prostate cancer s/p prostatectomy {y}",
           "stage III colon cancer s/p colectomy and FOLFOX {y}", "NSCLC s/p lobectomy {y}",
           "renal cell carcinoma s/p nephrectomy {y}", "multiple myeloma on maintenance lenalidomide",
           "melanoma of the back excised {y}", "metastatic breast cancer to bone, on letrozole")
SURGERIES = ("L4-5 laminectomy {y}", "L5-S1 microdiscectomy {y}", "L4-S1 posterior fusion {y}",
             "L3-4 decompression {y}", "L4-5 TLIF {y}")

# --- imaging orders: (description, cpt or None, lumbar?) ------------------------------------------------
LUMBAR_ORDERS = {
    "xr": (("XR LUMBAR SPINE 2-3 VIEWS", "72100"), ("XR LUMBAR SPINE COMPLETE MIN 4 VIEWS", "72110"),
           ("L-SPINE (AP & LAT)", "72100"), ("xr ls spine 2v", "72100"), ("XR L-SPINE FLEX/EXT", "72114"),
           ("Lumbar spine radiographs", "72100")),
    "mri": (("MRI LUMBAR SPINE WITHOUT CONTRAST", "72148"), ("MR L SPINE W/O CONTRAST", "72148"),
            ("MRI L-spine wo", "72148"), ("MRI LUMBAR SPINE NON-CONTRAST", "72148")),
    "mri_wwo": (("MRI LUMBAR SPINE WITHOUT AND WITH CONTRAST", "72158"), ("MRI L-SPINE W/WO CONTRAST", "72158"),
                ("MR LUMBAR SPINE W + W/O GAD", "72158")),
    "ct": (("CT LUMBAR SPINE WITHOUT CONTRAST", "72131"), ("CT L-SPINE WO", "72131"),
           ("CT lumbar spine non con", "72131")),
}
OTHER_ORDERS = (("CT ABDOMEN PELVIS WO CONTRAST (STONE PROTOCOL)", "74176"), ("XR CHEST 2 VIEWS", "71046"),
                ("XR KNEE 3 VIEWS RIGHT", "73562"), ("MRI BRAIN WITHOUT CONTRAST", "70551"),
                ("CT HEAD WO CONTRAST", "70450"), ("XR HIP 2-3 VIEWS LEFT", "73502"),
                ("XR THORACIC SPINE 2 VIEWS", "72070"), ("MRI CERVICAL SPINE WO CONTRAST", "72141"),
                ("DEXA BONE DENSITY AXIAL", "77080"), ("US ABDOMEN COMPLETE", "76700"),
                ("XR SHOULDER 2+ VIEWS RIGHT", "73030"))
# probability of an imaging order and which kinds, per case
ORDER_PLAN = {
    "general": (0.05, ("other",)), "mechanical": (0.06, ("xr", "xr", "mri", "other")),
    "radicular": (0.15, ("mri", "xr", "mri")), "chronic": (0.20, ("mri", "xr", "ct")),
    "weakness": (0.7, ("mri", "xr")), "foot_drop": (0.85, ("mri", "mri", "xr", "ct")),
    "ces": (0.95, ("mri", "mri", "ct")), "cancer": (0.7, ("mri_wwo", "mri", "xr")),
    "infection": (0.85, ("mri_wwo", "mri", "ct")), "fracture": (0.75, ("xr", "ct", "mri")),
    "postop": (0.45, ("mri_wwo", "mri", "xr", "ct")),
}


# --- profiles: what an archive looks like around its notes -------------------------------------------------
@dataclass(frozen=True)
class Staff:
    """An ordering provider: home site, the setting whose visits they see, their share of those visits, and how
    much more often than their peers they image an uncomplicated back (`overuse`, a factor on the chance)."""
    name: str
    site: str
    setting: str
    weight: float
    overuse: float = 1.0


@dataclass(frozen=True)
class Profile:
    """What an archive looks like around its notes (the notes themselves are composed the same way)."""
    name: str
    first_day: dt.date             # first visits fall in first_day .. first_day + days
    days: int
    last_day: dt.date | None       # no visit after it (None: no limit)
    visits: tuple                  # visits per patient, picked uniformly
    gaps: tuple                    # days from one visit to the next, picked uniformly
    cases: tuple                   # (case, weight)
    order_plan: dict               # case -> (chance of imaging, kinds to pick from)
    other_orders: dict             # chief complaint -> non-lumbar orders ("" for any other visit)
    link: tuple                    # orders linked by note_id below link[0], by encounter_id below link[1]
    keep_description: float        # chance an order keeps its free text; else CPT only
    keep_cpt: float                # chance an order keeps its CPT code; else free text only
    staff: tuple = ()              # the roster; empty: a random provider and site for each order
    overuse_cases: tuple = ()      # the cases for which a provider's overuse factor applies
    orphan_orders: float = 0.0     # chance a patient has an order whose visit note is not in the archive
    dated_padding: bool = False    # dates in padding blocks before the visit (else before REFERENCE_DAY)


BENCHMARK = Profile(
    "benchmark", first_day=EPOCH, days=3650, last_day=None, visits=(1, 1, 1, 2, 2, 3, 4),
    gaps=(3, 10, 30, 90, 200, 400), cases=CASES, order_plan=ORDER_PLAN, other_orders={"": OTHER_ORDERS},
    link=(0.4, 0.75), keep_description=0.9, keep_cpt=0.6)

# which providers see a visit written in each style
SETTING_OF_STYLE = {"terse_ed": "ed", "ed": "ed", "admission": "ed", "urgent_care": "urgent",
                    "primary_care": "primary", "telephone": "primary", "spine": "spine", "pt": "spine"}
SAMPLE_STAFF = (
    Staff("Dr Okafor", "Downtown", "ed", 5), Staff("Dr Hughes", "Downtown", "ed", 4),
    Staff("Dr Tanaka", "Riverside", "ed", 3), Staff("Dr Walsh", "Riverside", "ed", 1),
    Staff("Dr Quinn", "Lakeview", "urgent", 4), Staff("Dr Varga", "North", "urgent", 2),
    Staff("Dr Mensah", "Lakeview", "urgent", 1),
    Staff("Dr Chen", "South", "primary", 6), Staff("Dr Abbott", "North", "primary", 5),
    Staff("Dr Evans", "Riverside", "primary", 4), Staff("Dr Lopez", "South", "primary", 3.5, overuse=2.8),
    Staff("Dr Baker", "North", "primary", 3), Staff("Dr Gupta", "Lakeview", "primary", 4, overuse=3.0),
    Staff("Dr Diaz", "South", "primary", 2), Staff("Dr Fischer", "Riverside", "primary", 1),
    Staff("Dr Ibrahim", "South", "primary", 1), Staff("Dr Jensen", "North", "primary", 0.6),
    Staff("Dr Kowalski", "Downtown", "spine", 4), Staff("Dr Nguyen", "Downtown", "spine", 2),
    Staff("Dr Patel", "Downtown", "spine", 1),
)
SAMPLE_OTHER_ORDERS = {
    "": OTHER_ORDERS + (("MRI KNEE LEFT WO CONTRAST", "73721"), ("XR CERVICAL SPINE 2-3 VIEWS", "72040"),
                        ("CT CERVICAL SPINE WO CONTRAST", "72125"), ("XR PELVIS 1-2 VIEWS", "72170"),
                        ("XR SACRUM AND COCCYX MIN 2 VIEWS", "72220")),
    "cough and congestion": (("XR CHEST 2 VIEWS", "71046"), ("XR CHEST PA AND LATERAL", "71046"),
                             ("CT CHEST WO CONTRAST", "71250")),
    "right knee pain": (("XR KNEE 3 VIEWS RIGHT", "73562"), ("MRI KNEE RIGHT WITHOUT CONTRAST", "73721"),
                        ("XR R KNEE 2 VIEWS", "73560")),
    "annual physical": (("DEXA BONE DENSITY AXIAL", "77080"), ("MAMMO SCREENING BILATERAL", "77067"),
                        ("CT CHEST LOW DOSE LUNG CANCER SCREENING", "71271")),
    "hypertension follow-up": (("US RENAL COMPLETE", "76770"), ("XR CHEST 2 VIEWS", "71046")),
}
SAMPLE = Profile(
    "sample", first_day=dt.date(2023, 1, 1), days=1094, last_day=dt.date(2025, 12, 31),
    visits=(1, 1, 1, 1, 1, 1, 2, 2, 3), gaps=(7, 14, 28, 42, 90, 180, 365),
    cases=(("general", 22), ("mechanical", 46), ("radicular", 12), ("chronic", 8), ("weakness", 1.8),
           ("foot_drop", 1.0), ("ces", 0.6), ("cancer", 2.2), ("infection", 0.7), ("fracture", 2.5), ("postop", 1.8)),
    order_plan={"general": (0.06, ("other",)), "mechanical": (0.13, ("xr", "xr", "mri", "other")),
                "radicular": (0.25, ("mri", "xr", "mri")), "chronic": (0.30, ("mri", "xr", "ct")),
                "weakness": (0.8, ("mri", "xr")), "foot_drop": (0.9, ("mri", "mri", "xr", "ct")),
                "ces": (0.9, ("mri", "mri", "ct")), "cancer": (0.7, ("mri_wwo", "mri", "xr")),
                "infection": (0.85, ("mri_wwo", "mri", "ct")), "fracture": (0.75, ("xr", "ct", "mri")),
                "postop": (0.5, ("mri_wwo", "mri", "xr", "ct"))},
    other_orders=SAMPLE_OTHER_ORDERS, link=(0.15, 0.65), keep_description=0.88, keep_cpt=0.6, staff=SAMPLE_STAFF,
    overuse_cases=("mechanical", "radicular"), orphan_orders=0.03, dated_padding=True)
PROFILES = {p.name: p for p in (BENCHMARK, SAMPLE)}

ROS_NEGATIVES = ("fever", "chills", "night sweats", "unintentional weight loss", "bowel or bladder incontinence",
                 "saddle anesthesia", "urinary retention", "numbness or tingling in the legs", "leg weakness")


@dataclass
class Patient:
    number: int
    age: int
    sex: str
    occupation: str
    pmh: list
    psh: list
    meds: list
    allergies: str
    smoker: str
    family: str
    cancer: str | None = None
    surgery: str | None = None
    ivdu: str | None = None
    osteoporosis: bool = False
    history: list = field(default_factory=list)  # earlier visits' HPI, for copy-forward
    today: dt.date = REFERENCE_DAY  # the dates in padding blocks (refills, labs, imaging) are before it
    provider: str | None = None     # who signs the note; None: a random name

    @property
    def id(self) -> str:
        return f"P{self.number:07d}"

    @property
    def he(self) -> str:
        return "he" if self.sex == "M" else "she"

    @property
    def his(self) -> str:
        return "his" if self.sex == "M" else "her"

    @property
    def man(self) -> str:
        return "man" if self.sex == "M" else "woman"

    @property
    def male(self) -> str:
        return "male" if self.sex == "M" else "female"


def _pick(rng: random.Random, options):
    """`rng.choice`, three times faster (the generator makes about 30 picks per note)."""
    return options[int(rng.random() * len(options))]


def _int(rng: random.Random, low: int, high: int) -> int:
    """`rng.randint`, three times faster."""
    return low + int(rng.random() * (high - low + 1))


def _year(rng: random.Random, back: int = 12) -> int:
    return 2024 - _int(rng, 2, back)


def make_patient(rng: random.Random, number: int) -> Patient:
    age = int(min(94, max(18, rng.gauss(52, 17))))
    sex = _pick(rng, "MF")
    occupation = "retired" if age > 68 and rng.random() < 0.8 else _pick(rng, OCCUPATIONS)
    pt = Patient(number, age, sex, occupation, rng.sample(PMH_POOL, _int(rng, 0, 5)),
                 rng.sample(PSH_POOL, _int(rng, 0, 2)), rng.sample(MED_POOL, _int(rng, 0, 8)),
                 _pick(rng, ALLERGIES), _pick(rng, ("never smoker", "never smoker", "former smoker, quit 2010",
                                                    "current smoker 1 ppd", "vapes daily")),
                 _pick(rng, FAMILY))
    if rng.random() < 0.03:
        pt.cancer = _pick(rng, CANCERS).format(y=_year(rng))
    if rng.random() < 0.025:
        pt.surgery = _pick(rng, SURGERIES).format(y=_year(rng))
    if rng.random() < 0.01:
        pt.ivdu = _pick(rng, ("remote IVDU, sober since {y}", "h/o IV heroin use, in recovery on buprenorphine"))
        pt.ivdu = pt.ivdu.format(y=_year(rng))
    pt.osteoporosis = age > 60 and rng.random() < 0.12
    return pt


def _weighted(rng: random.Random, pairs) -> str:
    names, weights = zip(*pairs)
    return rng.choices(names, weights)[0]


# --- case content: what the visit is about ----------------------------------------------------------------
@dataclass
class Case:
    name: str
    cc: str
    hpi: list          # sentences
    positives: set     # ROS items that are positive (removed from the negated list)
    ros_positive: str  # the positive ROS line ('' for none)
    neuro: str         # the neuro exam
    back: str          # the back exam
    assessment: str
    plan: list
    temp: str = "36.8"


def _duration(rng: random.Random, chronic: bool = False) -> str:
    if chronic:
        return _pick(rng, ("8 months", "2 years", "over a year", "several years", "4 months", "10 years"))
    return _pick(rng, ("3 days", "5 days", "1 week", "10 days", "2 weeks", "3 weeks", "4 days", "2 days", "1 month"))


def _side(rng: random.Random) -> tuple[str, str]:
    return _pick(rng, (("right", "R"), ("left", "L")))


def _normal_neuro(rng: random.Random) -> str:
    return _pick(rng, (
        "Strength 5/5 throughout BLE. SILT. DTRs 2+ and symmetric. SLR negative bilaterally. Normal gait.",
        "Motor: 5/5 hip flexion, knee extension, ankle DF/PF and EHL bilaterally. Sensation intact to light touch "
        "L2-S1. Patellar and Achilles reflexes 2+ symmetric. Negative straight leg raise. Able to heel and toe walk.",
        "Neuro intact. Strength and sensation normal in both legs. Reflexes symmetric. SLR neg bilat.",
        "Strength: 5/5 BLE. Sensation: intact to LT. Reflexes: 2+ patellar, 1+ Achilles, toes downgoing. "
        "Gait: normal, heel/toe walk intact.",
    ))


def _mechanical_back(rng: random.Random) -> str:
    return _pick(rng, (
        "No midline tenderness. Bilateral lumbar paraspinal tenderness and spasm. ROM limited by pain in flexion.",
        "Tender over L paraspinals L4-S1, no step-off, no midline TTP. Pain with extension.",
        "Mild paraspinal tenderness bilaterally, no spinous process tenderness, no erythema or warmth.",
        "Back: full ROM with discomfort at end range flexion, paraspinal spasm R>L, no midline tenderness.",
    ))


def make_case(rng: random.Random, pt: Patient, name: str) -> Case:
    he, his, dur = pt.he, pt.his, _duration(rng)
    side, s = _side(rng)
    if name == "general":
        reason = _pick(rng, (
            ("hypertension follow-up", [f"Here for follow-up of hypertension. Home BPs 130s/80s. Taking {his} "
                                        "medications as prescribed. No headaches, chest pain or palpitations."]),
            ("annual physical", ["Here for annual preventive visit. Feels well overall. Sleeping well. "
                                 "Exercising 2-3 times per week. No new complaints."]),
            ("cough and congestion", [f"{dur} of cough, nasal congestion and sore throat. Subjective fevers at home "
                                      "the first two days, now resolved. No shortness of breath. "
                                      "Sick contacts at work."]),
            ("diabetes follow-up", ["Follow-up of type 2 diabetes. Fasting sugars 120-150. Last A1c 7.4%. "
                                    "No hypoglycemia. Checks feet daily, no sores."]),
            ("right knee pain", [f"R knee pain for {dur}, worse on stairs, no locking, no injury. Some swelling in "
                                 "the evening. Acetaminophen helps a little."]),
            ("anxiety follow-up", ["Follow-up of anxiety on SSRI. Mood better. Sleeping 6-7 hours. Denies SI/HI."]),
        ))
        aside = _pick(rng, ("Denies back pain.", "No other complaints.",
                            "Mentions occasional stiff back after gardening, resolves with rest.", ""))
        return Case(name, reason[0], reason[1] + [aside],
                    set(), "", _normal_neuro(rng) if rng.random() < 0.3 else "Grossly nonfocal.",
                    "No spinal tenderness." if rng.random() < 0.4 else "",
                    f"{reason[0].capitalize()}: stable.",
                    [_pick(rng, ("Continue current medications.", "Labs today: CMP, lipid panel, A1c.",
                                 "Supportive care, fluids, rest.", "Return in 3 months."))])
    if name in ("mechanical", "chronic"):
        chronic = name == "chronic"
        dur = _duration(rng, chronic)
        trigger = _pick(rng, ("after lifting a box at work", "after moving furniture", "after a long car ride",
                              "after gardening over the weekend", "on waking, no inciting event",
                              "after shoveling snow", "while bending to tie " + his + " shoes", "with no injury"))
        hpi = [f"{pt.age} yo {pt.sex} with {'chronic ' if chronic else ''}low back pain x {dur}, started {trigger}.",
               _pick(rng, ("Pain is aching, 5/10, localized to the lumbar area, does not radiate.",
                           "Describes a dull ache across the low back, worse with sitting and bending, "
                           "better with walking.",
                           "Pain 6/10, stiff in the morning, no radiation into the legs.",
                           "Non-radiating pain, worse at the end of the workday, eases lying down.")),
               _pick(rng, ("Has tried ibuprofen and heat with partial relief.", "Has not tried PT.",
                           "Took acetaminophen with little benefit.", "Using a heating pad and stretching.",
                           "Sleeps well."))]
        if chronic:
            hpi.append(_pick(rng, ("Completed 8 weeks of PT last year with no lasting relief.",
                                   "Failed 6 weeks of physical therapy and NSAIDs.",
                                   "Had an epidural steroid injection in 2021 with 2 months of relief.",
                                   "Seen by chiropractor with temporary benefit.")))
        if rng.random() < 0.15:
            hpi.append(_pick(rng, (f"{he.capitalize()} is asking for an MRI because a coworker had a slipped disc.",
                                   "Has been trying to lose weight, down 8 lb with diet and walking.",
                                   "Remote MVC in 1998 with whiplash, no back injury then.")))
        return Case(name, "low back pain", hpi, set(), "Musculoskeletal: positive for back pain.", _normal_neuro(rng),
                    _mechanical_back(rng),
                    _pick(rng, ("Acute mechanical low back pain, no red flags on history or exam.",
                                "Nonspecific low back pain without radiculopathy.",
                                "Lumbar strain.", "Chronic nonspecific LBP, stable, no red flags."))
                    if not chronic else "Chronic low back pain with failed conservative therapy.",
                    [_pick(rng, ("Reassurance, stay active, avoid bed rest.", "NSAIDs with food x 10 days, heat.",
                                 "Referred to PT 2x/wk x 6 wks.", "Home exercise program reviewed.")),
                     _pick(rng, ("No imaging indicated at this time.", "Discussed that imaging is not recommended "
                                 "in the first 6 weeks without red flags.", "Cyclobenzaprine 5 mg qhs prn.",
                                 "Work note for 3 days light duty."))])
    if name == "radicular":
        return Case(name, f"low back and {side} leg pain",
                    [f"{pt.age} y.o. {pt.male} with {dur} of low back pain radiating down the {side} leg "
                     f"to the {_pick(rng, ('lateral calf', 'foot', 'great toe', 'heel', 'knee'))}.",
                     _pick(rng, (f"Intermittent tingling in the {side} foot.", "No numbness or weakness.",
                                 "Pain worse with sitting and coughing.", "Shooting pain, 7/10.")),
                     _pick(rng, ("Has tried ibuprofen and a Medrol dose pack with some relief.",
                                 "Has not had PT yet.", "Naproxen helps a little."))],
                    {"numbness or tingling in the legs"}, f"Neuro: positive for {side} leg tingling.",
                    f"Strength 5/5 BLE. Sensation decreased to LT {side} lateral calf. Reflexes 2+ symmetric. "
                    f"Positive SLR on the {side} at {_pick(rng, (30, 40, 45, 60))} degrees.",
                    _mechanical_back(rng), f"{side.capitalize()} L5 radiculopathy / sciatica without motor deficit.",
                    ["Naproxen 500 mg BID, gabapentin 300 mg qhs.", "PT referral for McKenzie exercises.",
                     "If not improving in 6 weeks, consider MRI."])
    if name == "weakness":
        grade = _pick(rng, ("4/5", "4-/5", "4+/5", "3/5"))
        return Case(name, "back pain and leg weakness",
                    [f"{pt.age} yo {pt.sex} with {dur} of LBP and progressive {side} leg weakness, "
                     f"knee buckled twice on stairs.", f"Numbness over the {side} anterior thigh.",
                     "Denies saddle anesthesia. No bowel or bladder changes."],
                    {"leg weakness", "numbness or tingling in the legs"},
                    "Neuro: positive for leg weakness and numbness.",
                    f"Motor: {s} hip flexion {grade}, {s} knee extension {grade}, ankle DF 5/5 bilat. Sensation "
                    f"decreased {s} anterior thigh. Patellar reflex 1+ {s}, 2+ contralateral. Gait antalgic.",
                    _mechanical_back(rng), f"LBP with {side} L3-4 radiculopathy and motor deficit ({grade}).",
                    ["MRI lumbar spine without contrast.", "Spine surgery referral.", "Return precautions reviewed."])
    if name == "foot_drop":
        return Case(name, f"{side} foot weakness",
                    [f"{pt.age} yo {pt.sex} with {dur} of low back pain and {side} leg pain, now with {side} foot drop "
                     f"since {_pick(rng, ('yesterday', '3 days ago', 'last week'))}; tripping over {his} toes.",
                     "Denies bowel or bladder incontinence, no saddle numbness."],
                    {"leg weakness", "numbness or tingling in the legs"}, f"Neuro: positive for {side} foot weakness.",
                    f"{s} ankle DF {_pick(rng, ('2/5', '3/5', '1/5'))}, {s} EHL 3/5, PF 5/5. Steppage gait on the "
                    f"{side}. Unable to heel walk on the {side}. Decreased sensation dorsum of {s} foot.",
                    _mechanical_back(rng), f"Acute {side} foot drop, likely L5 radiculopathy.",
                    ["Urgent MRI L-spine w/o contrast.", "Spine surgery consult today.", "AFO for safety."])
    if name == "ces":
        return Case(name, "back pain, trouble urinating",
                    [f"{pt.age} yo {pt.sex} with chronic LBP, now {_pick(rng, ('2 days', '24 hours', '3 days'))} of "
                     "worsening pain with numbness in the groin and inability to void.",
                     "One episode of stool incontinence this morning.", "Numbness in both legs, L>R."],
                    {"saddle anesthesia", "urinary retention", "bowel or bladder incontinence",
                     "numbness or tingling in the legs"},
                    "GU: positive for urinary retention. GI: positive for fecal incontinence.",
                    "Motor 5/5 R, 4/5 L EHL. Decreased perianal sensation. Rectal: decreased rectal tone. "
                    f"Bladder scan PVR {_pick(rng, (450, 650, 800))} mL.",
                    "Midline lower lumbar tenderness.", "Concern for cauda equina syndrome.",
                    ["STAT MRI lumbar spine.", "Neurosurgery paged.", "Foley catheter."])
    if name == "cancer":
        pt.cancer = pt.cancer or _pick(rng, CANCERS).format(y=_year(rng))
        return Case(name, "back pain",
                    [f"{pt.age} yo {pt.sex} with h/o {pt.cancer} presents with {dur} of progressive low back pain, "
                     "worse at night and lying flat.", _pick(rng, ("Lost 12 lb over 2 months without trying.",
                                                                   "Appetite down.", "No weight loss.")),
                     "No weakness, numbness or bowel/bladder changes."],
                    {"night sweats"} if rng.random() < 0.3 else set(), "Constitutional: positive for fatigue.",
                    _normal_neuro(rng), "Focal midline tenderness over L3 spinous process.",
                    "New back pain in a patient with a history of cancer: concern for metastatic disease.",
                    ["MRI lumbar spine with and without contrast.", "Oncology aware.", "Labs: CBC, CMP, ESR, CRP, Ca."])
    if name == "infection":
        pt.ivdu = pt.ivdu or "active IV heroin use"
        return Case(name, "back pain, fever",
                    [f"{pt.age} yo {pt.sex} with {pt.ivdu}, febrile to {_pick(rng, ('38.9', '39.2', '38.6'))} at home, "
                     f"severe midline low back pain x {_pick(rng, ('5 days', '1 week', '10 days'))}.",
                     "Last injected 3 days ago.", "No leg weakness. No bowel or bladder changes."],
                    {"fever", "chills"}, "Constitutional: positive for fever, chills.",
                    _normal_neuro(rng), "Exquisite midline tenderness L2-L4. Track marks on both forearms.",
                    "Fever and midline back pain in a person who injects drugs: concern for epidural abscess / "
                    "vertebral osteomyelitis.", ["MRI L-spine w/wo contrast.", "Blood cultures x2, ESR, CRP.",
                                                 "ID consult."], temp=_pick(rng, ("38.9", "39.1", "38.4")))
    if name == "fracture":
        old = pt.age >= 65
        mech = "a ground-level fall at home" if old else _pick(rng, ("an MVC, restrained driver",
                                                                     "a fall from a ladder (8 ft)"))
        when = _pick(rng, ("yesterday", "this morning", "2 days ago"))
        if old:
            pt.osteoporosis = pt.osteoporosis or rng.random() < 0.5
        return Case(name, "back pain after fall",
                    [f"{pt.age} yo {pt.sex} with acute low back pain after {mech} {when}.",
                     ("Osteoporosis on alendronate." if pt.osteoporosis else
                      "No known osteoporosis; normal DEXA 2019." if old else "Otherwise healthy."),
                     "No leg numbness or weakness. No head strike."],
                    set(), "", _normal_neuro(rng), "Point tenderness over L1 spinous process. No step-off.",
                    "Acute low back pain after trauma; rule out compression fracture.",
                    ["XR lumbar spine.", "Pain control.", "Fall precautions."])
    # postop
    pt.surgery = pt.surgery or _pick(rng, SURGERIES).format(y=_year(rng))
    return Case(name, "back pain after prior surgery",
                [f"{pt.age} yo {pt.sex} s/p {pt.surgery}, now {dur} of recurrent low back pain and {side} leg pain "
                 "similar to pre-operative pain.", _pick(rng, ("No fever, wound healed.",
                                                               "Tried gabapentin, no relief.",
                                                               "Known old L foot drop since the surgery, unchanged."))],
                {"numbness or tingling in the legs"} if rng.random() < 0.5 else set(), "",
                f"Strength 5/5 except {s} EHL 4+/5 (baseline per op note). Sensation decreased {s} L5 dermatome. "
                f"SLR positive on the {side}.", "Well-healed midline incision. Paraspinal tenderness.",
                f"Recurrent {side} radicular pain s/p lumbar surgery.",
                ["MRI lumbar spine w/wo contrast to evaluate for recurrent disc vs scar.", "Spine surgery follow-up."])


# --- the pieces of a note ---------------------------------------------------------------------------------
def negated_ros(rng: random.Random, case: Case, terse: bool) -> str:
    items = [i for i in ROS_NEGATIVES if i not in case.positives]
    items = rng.sample(items, k=max(2, int(len(items) * rng.uniform(0.5, 1.0))))
    if terse:
        short = {"unintentional weight loss": "wt loss", "bowel or bladder incontinence": "B/B incontinence",
                 "saddle anesthesia": "saddle anesthesia", "numbness or tingling in the legs": "N/T",
                 "urinary retention": "retention", "leg weakness": "weakness"}
        return "Denies " + ", ".join(short.get(i, i) for i in items) + "."
    lead = _pick(rng, ("Denies", "Negative for", "No", "Pt denies"))
    return f"{lead} {', '.join(items[:-1])} or {items[-1]}." if len(items) > 1 else f"{lead} {items[0]}."


def ros_block(rng: random.Random, case: Case) -> str:
    lines = [
        "Constitutional: " + ("positive for fever, chills." if "fever" in case.positives
                              else "negative for fever, chills, unintentional weight loss, night sweats."),
        "Eyes: negative for vision change.", "Cardiovascular: negative for chest pain, palpitations, leg swelling.",
        "Respiratory: negative for cough, shortness of breath.",
        "Gastrointestinal: " + ("positive for fecal incontinence." if "bowel or bladder incontinence" in case.positives
                                else "negative for abdominal pain, nausea, bowel incontinence."),
        "Genitourinary: " + ("positive for urinary retention." if "urinary retention" in case.positives
                             else "negative for dysuria, hematuria, urinary retention, incontinence."),
        "Musculoskeletal: " + ("positive for back pain." if case.name != "general" else "negative for joint swelling."),
        "Neurological: " + ("positive for numbness." if "numbness or tingling in the legs" in case.positives
                            else "negative for saddle anesthesia, focal weakness, numbness, headache."),
        "Psychiatric: negative for depression, SI.", "Skin: negative for rash.",
        "All other systems reviewed and are negative.",
    ]
    keep = lines if rng.random() < 0.6 else [
        line for line in lines if rng.random() < 0.6 or "Neuro" in line or "Genito" in line]
    return "Review of Systems:\n" + "\n".join(keep)


def vitals(rng: random.Random, case: Case, style: str = "line") -> str:
    bp = f"{_int(rng, 108, 168)}/{_int(rng, 62, 98)}"
    hr, rr, spo2 = _int(rng, 58, 104), _int(rng, 12, 20), _int(rng, 94, 100)
    wt = _int(rng, 52, 128)
    if style == "table":
        return (f"Vitals:\n  BP: {bp} mmHg (sitting, L arm)\n  Pulse: {hr}\n  Temp: {case.temp} C (oral)\n"
                f"  Resp: {rr}\n  SpO2: {spo2}% on room air\n  Weight: {wt} kg\n  BMI: {rng.uniform(19, 41):.1f}\n"
                f"  Pain score: {_int(rng, 0, 9)}/10")
    return f"BP {bp}  HR {hr}  RR {rr}  T {case.temp}  SpO2 {spo2}%  Wt {wt} kg"


def family_line(rng: random.Random, pt: Patient) -> str:
    return _pick(rng, ("Family History: ", "FHx: ", "FH: ")) + pt.family


def history_lines(rng: random.Random, pt: Patient, terse: bool) -> list[str]:
    pmh = list(pt.pmh)
    if pt.cancer:
        pmh.append(pt.cancer)
    if pt.osteoporosis:
        pmh.append("osteoporosis")
    psh = list(pt.psh) + ([pt.surgery] if pt.surgery else [])
    meds = pt.meds or ["none"]
    habits = pt.ivdu or _pick(rng, ("Denies IVDU.", "No drug use.", "Social EtOH.", "Denies illicit drug use.",
                                    "2-3 beers on weekends."))
    social = f"{pt.occupation}. {pt.smoker.capitalize()}. {habits}"
    if terse:
        return [f"PMH: {', '.join(pmh) or 'none'}", f"Meds: {', '.join(m.split(' ')[0] for m in meds)}",
                f"All: {pt.allergies}"]
    return [f"Past Medical History: {'; '.join(pmh) or 'none'}",
            f"Past Surgical History: {'; '.join(psh) or 'none'}"
            + ("" if pt.surgery or rng.random() < 0.6 else ". No prior back surgery."),
            "Medications:\n" + "\n".join(f"- {m}" for m in meds),
            f"Allergies: {pt.allergies}", f"Social History: {social}", family_line(rng, pt)]


def return_precautions(rng: random.Random) -> str:
    return _pick(rng, (
        "Return precautions reviewed: new leg weakness, numbness in the groin, trouble urinating or fevers -> ED.",
        "Return if saddle numbness, bladder or bowel changes, or leg weakness.",
        "Advised to go to the ED if weakness or numbness between the legs develops.",
        "CES precautions given.", "Call for fever > 38, new leg weakness/numbness, or urinary retention.",
        "Red flag symptoms reviewed with patient; will return if any develop.",
    ))


# --- padding: the bulk of long templated notes -------------------------------------------------------------
def pad_med_list(rng: random.Random, pt: Patient) -> str:
    meds = rng.sample(MED_POOL, _int(rng, 6, 14))
    return ("Current Outpatient Medications (reconciled today):\n" + "\n".join(
        f"  {m} - Disp: {_pick(rng, (30, 90))}, Rfl: {_int(rng, 0, 5)}, Last filled {_date(rng, 400, pt.today)}"
        for m in meds))


def pad_labs(rng: random.Random, pt: Patient) -> str:
    return (f"Labs ({_date(rng, 200, pt.today)}):\n"
            f"  CBC: WBC {rng.uniform(4, 11):.1f}, Hgb {rng.uniform(11, 16):.1f}, Plt {_int(rng, 160, 400)}\n"
            f"  BMP: Na {_int(rng, 134, 145)}, K {rng.uniform(3.5, 5.1):.1f}, Cl {_int(rng, 98, 108)}, "
            f"CO2 {_int(rng, 21, 30)}, BUN {_int(rng, 8, 24)}, Cr {rng.uniform(0.6, 1.4):.2f}, "
            f"Glu {_int(rng, 80, 180)}, Ca {rng.uniform(8.6, 10.2):.1f}\n"
            f"  A1c {rng.uniform(5.2, 8.9):.1f}%  TSH {rng.uniform(0.5, 4.5):.2f}  LDL {_int(rng, 60, 170)}")


def pad_health_maintenance(rng: random.Random, pt: Patient) -> str:
    return ("Health Maintenance:\n"
            f"  Colonoscopy: {_pick(rng, ('due', 'up to date (2021)', 'declined', 'not indicated'))}\n"
            f"  Mammogram: {_pick(rng, ('n/a', 'due', 'up to date'))}\n"
            f"  Influenza vaccine: {_pick(rng, ('given today', 'declined', 'received at pharmacy'))}\n"
            f"  Tdap: {_pick(rng, ('2019', 'due', '2016'))}  Pneumococcal: {_pick(rng, ('n/a', 'PCV20 2023', 'due'))}\n"
            f"  Depression screen PHQ-2: {_int(rng, 0, 3)}  Fall risk screen: negative")


def pad_education(rng: random.Random, pt: Patient) -> str:
    return _pick(rng, (
        "Patient education: Discussed the natural history of low back pain, that most episodes improve within "
        "4-6 weeks, the importance of staying active and avoiding prolonged bed rest, proper lifting mechanics, "
        "and the role of heat and over-the-counter analgesics. Written materials provided. Patient verbalized "
        "understanding and agrees with the plan.",
        "Counseled on diet and exercise, goal of 150 minutes of moderate activity per week, limiting sodium and "
        "processed foods, medication adherence and home blood pressure monitoring. Questions answered.",
        "Shared decision-making: risks, benefits and alternatives of the treatment plan were discussed including "
        "medication side effects (GI upset, drowsiness). The patient had the opportunity to ask questions and all "
        "were answered to the patient's satisfaction.",
    ))


def pad_attestation(rng: random.Random, pt: Patient) -> str:
    return _pick(rng, (
        f"I personally saw and examined the patient and agree with the resident's findings and plan as documented "
        f"above. Total time spent on the date of the encounter: {_int(rng, 20, 45)} minutes, including review of "
        "records, history and examination, counseling and documentation.",
        f"This note was created with voice recognition software; minor transcription errors may be present. "
        f"Electronically signed by {pt.provider or _pick(rng, PROVIDERS)}, MD on {_date(rng, 30, pt.today)}.",
        f"Patient seen with a medical interpreter ({_pick(rng, ('Spanish', 'Vietnamese', 'Arabic', 'Somali'))}), "
        "ID #" + str(_int(rng, 10000, 99999)) + ". Visit conducted in person. Chaperone offered.",
    ))


def pad_problem_list(rng: random.Random, pt: Patient) -> str:
    probs = rng.sample(PMH_POOL, _int(rng, 3, 8))
    return "Problem List:\n" + "\n".join(f"  {i}. {p} (since {_year(rng, 20)})" for i, p in enumerate(probs, 1))


def pad_copy_forward(rng: random.Random, pt: Patient) -> str:
    if not pt.history:
        return ""
    old = _pick(rng, pt.history)
    return (f"--- Interval history copied from visit of {_date(rng, 700, pt.today)} ---\n{old}\n"
            "--- end of copied text ---\n"
            "Interval update: " + _pick(rng, ("no change since last visit.", "symptoms improved.",
                                               "see HPI above.", "doing about the same.")))


def pad_imaging_report(rng: random.Random, pt: Patient) -> str:
    study, findings = _pick(rng, (
        ("XR CHEST 2 VIEWS", "Lungs are clear. No pleural effusion or pneumothorax. Heart size normal."),
        ("XR LUMBAR SPINE 2-3 VIEWS", "Five non-rib-bearing lumbar vertebrae. Mild disc space narrowing at L4-5 and "
                                      "L5-S1 with small anterior osteophytes. No acute fracture or listhesis."),
        ("XR KNEE 3 VIEWS", "Moderate medial compartment joint space narrowing with osteophytes. No effusion."),
        ("US ABDOMEN", "Liver normal in size and echotexture. No gallstones. Kidneys without hydronephrosis."),
        ("CT HEAD WO CONTRAST", "No acute intracranial hemorrhage, mass effect or territorial infarct."),
    ))
    return (f"Prior imaging reviewed - {study} ({_date(rng, 1500, pt.today)}):\nFINDINGS: {findings}\n"
            f"IMPRESSION: {_pick(rng, ('No acute findings.', 'Mild degenerative changes.', 'Unremarkable study.'))}")


def pad_avs(rng: random.Random, pt: Patient) -> str:
    return ("After Visit Summary - Patient Instructions:\n"
            "Thank you for visiting our clinic today. Please take your medications as directed and keep your "
            f"follow-up appointment in {_pick(rng, ('2 weeks', '4 weeks', '3 months', '6 months'))}. "
            "You can reach the nurse line 24 hours a day. Please call 911 or go to the nearest emergency department "
            "if you have chest pain, trouble breathing, sudden weakness, or any other symptom that worries you. "
            "Your after-visit summary and test results are available in the patient portal.")


def pad_orders_list(rng: random.Random, pt: Patient) -> str:
    items = rng.sample(("CBC with differential", "Comprehensive metabolic panel", "Lipid panel", "Hemoglobin A1c",
                        "TSH", "Urinalysis with reflex culture", "Vitamin D 25-OH", "PT referral",
                        "Ambulatory referral to podiatry", "Influenza vaccine IM", "ESR", "CRP"), _int(rng, 3, 6))
    return "Orders Placed This Encounter:\n" + "\n".join(f"  {o} [{_int(rng, 100000, 999999)}]" for o in items)


def pad_immunizations(rng: random.Random, pt: Patient) -> str:
    vaccines = rng.sample(("Influenza", "COVID-19 mRNA", "Tdap", "Shingrix dose 1", "Shingrix dose 2", "Hep B series",
                           "PCV20", "MMR"), 4)
    return "Immunizations reviewed:\n" + "\n".join(f"  {v}: {_date(rng, 3000, pt.today)}" for v in vaccines)


PADDING = (pad_med_list, pad_health_maintenance, pad_education, pad_attestation, pad_problem_list,
           pad_immunizations, pad_avs, pad_orders_list)
REPEATABLE_PADDING = (pad_labs, pad_copy_forward, pad_imaging_report)  # each copy differs (dates, visits)
# the shortest each padding block can be, in characters
PAD_MIN_CHARS = {pad_med_list: 400, pad_health_maintenance: 170, pad_education: 190, pad_attestation: 100,
                 pad_problem_list: 60, pad_immunizations: 90, pad_avs: 440, pad_orders_list: 70, pad_labs: 140,
                 pad_copy_forward: 90, pad_imaging_report: 110}


def _date(rng: random.Random, days_back: int, today: dt.date = REFERENCE_DAY) -> str:
    d = today - dt.timedelta(days=_int(rng, 0, days_back))
    return f"{d.month}/{d.day}/{d.year}"


# --- the note styles ---------------------------------------------------------------------------------------
def style_terse(rng: random.Random, pt: Patient, case: Case, setting: str) -> list[str]:
    heads = ("ED NOTE", "ED provider note", "") if setting == "terse_ed" else ("Urgent care:", "UC visit", "")
    head = _pick(rng, heads)
    hpi = " ".join(case.hpi)
    body = f"{hpi} {negated_ros(rng, case, True)} {_pick(rng, ('No hx of cancer.', 'No IVDU.', ''))}".strip()
    exam = f"Exam: {'afebrile' if case.temp < '38' else 'T ' + case.temp}. {case.back} {case.neuro}".strip()
    safety_net = return_precautions(rng) if rng.random() < 0.6 else ""
    plan = f"A/P: {case.assessment} {' '.join(case.plan)} {safety_net}".strip()
    return [p for p in (head, body, exam, plan) if p]


def style_telephone(rng: random.Random, pt: Patient, case: Case) -> list[str]:
    def yes_no(item: str) -> str:
        return "yes" if item in case.positives else _pick(rng, ("no", "denied", "none"))

    lines = [_pick(rng, ("TELEPHONE TRIAGE", "PHONE TRIAGE - BACK PAIN PROTOCOL", "Nurse triage call")),
             f"{pt.age} yo {pt.sex}", f"Chief complaint: {case.cc}", " ".join(case.hpi[:2]),
             f"Fever: {yes_no('fever')}", f"Saddle anesthesia: {yes_no('saddle anesthesia')}",
             f"Bladder: {'unable to void' if 'urinary retention' in case.positives else 'voiding normally'}",
             f"Bowel: {'incontinence x1' if 'bowel or bladder incontinence' in case.positives else 'no change'}",
             f"Leg weakness: {yes_no('leg weakness')}",
             f"Hx cancer: {pt.cancer or 'none'}",
             "Disposition: " + ("ED now." if case.name in ("ces", "infection", "foot_drop") else
                                _pick(rng, ("routine appt within 1 wk + home care.", "PCP appt tomorrow.",
                                            "self-care advice given."))),
             return_precautions(rng), f"{_pick(rng, ('R. Diaz', 'M. Chen', 'T. Brooks', 'A. Novak'))}, RN"]
    return ["\n".join(lines)]


def style_ed(rng: random.Random, pt: Patient, case: Case) -> list[str]:
    upper = rng.random() < 0.5
    h = (lambda s: s.upper()) if upper else (lambda s: s)
    return [
        h(_pick(rng, ("Emergency Department Visit", "ED Physician Record", "Emergency Department Note"))),
        f"{h('Chief Complaint')}: {case.cc}",
        f"{h('History of Present Illness')}: " + " ".join(case.hpi) + " " + negated_ros(rng, case, False),
        *history_lines(rng, pt, terse=rng.random() < 0.5),
        f"{h('Review of Systems')}: as per HPI, otherwise negative.",
        f"{h('Physical Examination')}:\n{h('Vitals')}: {vitals(rng, case)}\nGeneral: "
        f"{_pick(rng, ('uncomfortable, NAD', 'in moderate distress', 'well appearing'))}\n"
        f"Back: {case.back}\nNeuro: {case.neuro}",
        f"{h('Medical Decision Making')}: {case.assessment}",
        f"{h('Plan')}:\n" + "\n".join(f"{i}. {p}" for i, p in enumerate(case.plan, 1)),
        f"{h('Disposition')}: {_pick(rng, ('discharged home', 'admitted', 'observation'))}. {return_precautions(rng)}",
    ]


def style_primary_care(rng: random.Random, pt: Patient, case: Case) -> list[str]:
    return [
        _pick(rng, ("PRIMARY CARE OFFICE VISIT", "Internal Medicine - Established Patient",
                    "Family Medicine Clinic Note",
                    "PRIMARY CARE - ESTABLISHED PATIENT VISIT")),
        f"Chief Complaint: {case.cc}",
        "History of Present Illness:\n" + " ".join(case.hpi) + " " + negated_ros(rng, case, False),
        ros_block(rng, case),
        *history_lines(rng, pt, terse=False),
        "Physical Exam:\n" + vitals(rng, case, _pick(rng, ("line", "table"))) +
        f"\nGeneral: {_pick(rng, ('well-appearing, no distress', 'NAD, pleasant', 'uncomfortable changing position'))}"
        f"\nHEENT: normocephalic, atraumatic. MMM.\nHeart: RRR, no murmurs.\nLungs: CTAB."
        + (f"\nBack: {case.back}" if case.back else "") + f"\nNeuro: {case.neuro}",
        "Assessment and Plan:\n" + case.assessment + "\n" + "\n".join(f"- {p}" for p in case.plan)
        + (f"\n- {return_precautions(rng)}" if case.name != "general" else ""),
    ]


def style_spine(rng: random.Random, pt: Patient, case: Case) -> list[str]:
    return [
        _pick(rng, ("SPINE CENTER - NEW PATIENT", "Spine clinic follow-up", "Physiatry consult")),
        f"Referring provider: {_pick(rng, PROVIDERS)}. Reason: {case.cc}.",
        "HPI: " + " ".join(case.hpi) + " " + negated_ros(rng, case, rng.random() < 0.4),
        f"ODI {_int(rng, 8, 60)}%. VAS back {_int(rng, 2, 9)}/10, leg {_int(rng, 0, 8)}/10.",
        *history_lines(rng, pt, terse=True),
        f"Exam: {vitals(rng, case)}\n{case.back}\n{case.neuro}",
        "Imaging: " + _pick(rng, ("none on file.", "XR L-spine 2023: mild L4-5 disc height loss.",
                                  "outside MRI report reviewed: L4-5 broad-based disc bulge.")),
        f"Impression: {case.assessment}\nPlan: " + " ".join(case.plan),
    ]


def style_pt(rng: random.Random, pt: Patient, case: Case) -> list[str]:
    side, s = _side(rng)
    weak = case.name in ("weakness", "foot_drop")
    return [
        _pick(rng, ("OUTPATIENT PT - LUMBAR EVAL", "Physical Therapy Initial Evaluation", "PT Progress Note")),
        f"Pt: {pt.age} yo {pt.sex}, referred for {case.cc}. "
        f"Precautions: {_pick(rng, ('none', 'no lifting >10 lb', 'fall risk'))}.",
        "S: " + " ".join(case.hpi) + " " + negated_ros(rng, case, True),
        f"PMH: {', '.join(pt.pmh) or 'none'}.",
        "O:\nGait: " + ("steppage gait." if case.name == "foot_drop" else "antalgic, otherwise symmetric.") +
        f"\nMMT (R/L): hip flexion 5/5 | 5/5, knee ext 5/5 | 5/5, ankle DF {'4/5' if weak else '5/5'} | 5/5, EHL "
        f"{'4/5' if weak else '5/5'} | 5/5, PF 5/5 | 5/5\n"
        f"Sensation: {'decreased LT ' + s + ' lateral calf' if case.positives else 'intact'}.\n"
        f"SLR {'positive ' + s if case.name == 'radicular' else 'neg bilat'}. 6MWT: {_int(rng, 250, 520)} m. "
        f"ODI: {_int(rng, 10, 55)}%.",
        f"A: {case.assessment}",
        f"P: PT {_pick(rng, ('2x/wk x 6 wks', '1-2x/wk x 8 wks'))}. Core stabilization, neural mobility, "
        "walking program, "
        "HEP issued. " + ("Sent message to referring provider re: weakness." if weak else ""),
        f"Goals: ODI < {_int(rng, 10, 20)}% in 6 wks; return to work full duty; sit 60 min without pain.",
    ]


def style_admission(rng: random.Random, pt: Patient, case: Case) -> list[str]:
    return [
        "ADMISSION HISTORY AND PHYSICAL", f"Chief Complaint: {case.cc}",
        "HPI: " + " ".join(case.hpi) + " " + negated_ros(rng, case, False),
        ros_block(rng, case), *history_lines(rng, pt, terse=False),
        "Physical Exam:\n" + vitals(rng, case, "table")
        + f"\nBack: {case.back or 'no tenderness'}\nNeuro: {case.neuro}",
        pad_labs(rng, pt),
        f"Assessment/Plan:\n{pt.age} yo {pt.sex} admitted for {case.cc}. {case.assessment}\n"
        + "\n".join(f"# {p}" for p in case.plan) + "\nDVT ppx: heparin SQ. Code status: full code.",
    ]


def compose(rng: random.Random, pt: Patient, case: Case, style: str, target: int) -> str:
    if style in ("terse_ed", "urgent_care"):
        parts = style_terse(rng, pt, case, style)
    elif style == "telephone":
        parts = style_telephone(rng, pt, case)
    else:
        parts = {"ed": style_ed, "primary_care": style_primary_care, "spine": style_spine, "pt": style_pt,
                 "admission": style_admission}[style](rng, pt, case)
    sep = "\n" if style in ("terse_ed", "urgent_care", "telephone") else "\n\n"
    text = sep.join(parts)
    # padding before the last part (the plan) until the target length; long notes first get a copy-forward
    pads = list(PADDING) + list(REPEATABLE_PADDING) * 4
    rng.shuffle(pads)
    if target > 4000 and pt.history:
        pads.insert(0, pad_copy_forward)
    extra, length = [], len(text)
    limit = min(MAX_CHARS, target + 150)
    for pad in pads:
        if length >= target - 150:
            break
        if length + PAD_MIN_CHARS[pad] > limit:
            continue  # cannot fit: do not spend time writing it
        block = pad(rng, pt)
        if block and length + len(block) <= limit:
            extra.append(block)
            length += len(block) + len(sep)
    if extra:
        text = sep.join(parts[:-1] + extra + parts[-1:])
    while len(text) < MIN_CHARS:
        text += sep + pad_attestation(rng, pt)
    return text[:MAX_CHARS]


# --- the archive -------------------------------------------------------------------------------------------
def length_target(rng: random.Random) -> int:
    return int(min(MAX_CHARS, max(MIN_CHARS, math.exp(rng.gauss(math.log(MEDIAN_CHARS), LENGTH_SIGMA)))))


def patient_visits(seed: int, number: int, profile: Profile = BENCHMARK) -> Iterator[tuple[dict, list[dict]]]:
    """One patient's notes and the orders placed at each visit."""
    rng = random.Random(seed * 1_000_003 + number)
    pt = make_patient(rng, number)
    day = profile.first_day + dt.timedelta(days=_int(rng, 0, profile.days))
    first_day, visits = day, _pick(rng, profile.visits)
    for visit in range(visits):
        case_name = _weighted(rng, profile.cases)
        case = make_case(rng, pt, case_name)
        target = length_target(rng)
        style = next(_weighted(rng, styles) for bound, styles in STYLES_BY_LENGTH if target < bound)
        staff = None
        if profile.staff:
            setting = SETTING_OF_STYLE[style]
            staff = _weighted(rng, [(s, s.weight) for s in profile.staff if s.setting == setting])
            pt.provider = staff.name
        if profile.dated_padding:
            pt.today = day
        text = compose(rng, pt, case, style, target)
        pt.history.append(" ".join(case.hpi))
        note_id = f"N{number:07d}-{visit}"
        encounter_id = f"E{number:07d}{visit}"
        note = {"note_id": note_id, "patient_id": pt.id, "note_date": day.isoformat(), "encounter_id": encounter_id,
                "text": text, "case": case_name, "style": style}
        orders = make_orders(rng, case, note, profile, staff)
        next_day = day + dt.timedelta(days=_pick(rng, profile.gaps))
        last = visit == visits - 1 or (profile.last_day is not None and next_day > profile.last_day)
        if last and profile.orphan_orders and rng.random() < profile.orphan_orders:
            orders.extend(orphan_order(rng, profile, pt, first_day, day))
        yield note, orders
        if last:
            return
        day = next_day


def _order_fields(rng: random.Random, profile: Profile, description: str, cpt: str) -> dict:
    """The order's free text and CPT code: some orders carry only one of them."""
    fields = {"description": description if rng.random() < profile.keep_description else "",
              "cpt": cpt if rng.random() < profile.keep_cpt else ""}
    if not fields["description"] and not fields["cpt"]:
        fields["description"] = description
    return fields


def make_orders(rng: random.Random, case: Case, note: dict, profile: Profile = BENCHMARK,
                staff: Staff | None = None) -> list[dict]:
    """The imaging orders placed at a visit, often none; by the visit's provider when the profile has a roster."""
    chance, kinds = profile.order_plan[case.name]
    if staff is not None and case.name in profile.overuse_cases:
        chance *= staff.overuse
    if rng.random() >= chance:
        return []
    others = profile.other_orders.get(case.cc, profile.other_orders[""])
    by_note, by_encounter = profile.link
    orders = []
    for k in range(1 if rng.random() < 0.85 else 2):
        kind = _pick(rng, kinds)
        description, cpt = _pick(rng, others if kind == "other" else LUMBAR_ORDERS[kind])
        link = rng.random()
        order_date = dt.date.fromisoformat(note["note_date"]) + dt.timedelta(days=_pick(rng, (0, 0, 0, 1, 2, 5, 40)))
        if profile.last_day is not None:
            order_date = min(order_date, profile.last_day)
        orders.append({
            "order_id": f"O{note['note_id'][1:]}-{k}",
            "patient_id": note["patient_id"],
            "encounter_id": note["encounter_id"] if by_note <= link < by_encounter else "",
            "note_id": note["note_id"] if link < by_note else "",
            "order_date": order_date.isoformat(),
            **_order_fields(rng, profile, description, cpt),
            "priority": {"ces": "STAT", "foot_drop": "urgent", "infection": "STAT"}.get(
                case.name, _pick(rng, ("routine", "routine", "routine", "urgent"))),
            "provider": staff.name if staff else _pick(rng, PROVIDERS),
            "site": staff.site if staff else _pick(rng, SITES),
        })
    return orders


def orphan_order(rng: random.Random, profile: Profile, pt: Patient, first_day: dt.date, last_day: dt.date) -> list:
    """An order from a visit whose note is not in the archive (another department's): dated 5 weeks to 6 months
    after the patient's last note, else before the first one, so that no note of the patient precedes it within
    the matching window; none when neither date is within the archive's dates."""
    gap = dt.timedelta(days=_int(rng, 35, 180))
    day = last_day + gap
    if profile.last_day is not None and day > profile.last_day:
        day = first_day - gap
    staff = _weighted(rng, [(s, s.weight) for s in profile.staff]) if profile.staff else None
    description, cpt = _pick(rng, LUMBAR_ORDERS[_pick(rng, ("xr", "mri"))] if rng.random() < 0.6
                             else profile.other_orders[""])
    if day < profile.first_day:
        return []
    return [{"order_id": f"O{pt.number:07d}-9-0", "patient_id": pt.id,
            "encounter_id": f"E{pt.number:07d}9" if rng.random() < 0.5 else "", "note_id": "",
            "order_date": day.isoformat(), **_order_fields(rng, profile, description, cpt),
            "priority": _pick(rng, ("routine", "routine", "urgent")),
            "provider": staff.name if staff else _pick(rng, PROVIDERS),
            "site": staff.site if staff else _pick(rng, SITES)}]


def generate(n: int, seed: int = 0, profile: Profile = BENCHMARK) -> Iterator[tuple[dict, list[dict]]]:
    """The first `n` notes of the archive for `seed` and `profile`, each with the orders placed at its visit. A note
    also carries what the generator made it from, `case` and `style`, which the archive files leave out."""
    produced, number = 0, 0
    while produced < n:
        for note, orders in patient_visits(seed, number, profile):
            yield note, orders
            produced += 1
            if produced == n:
                return
        number += 1


def length_stats(lengths: list[int]) -> dict:
    ordered = sorted(lengths)
    def q(share: float) -> int:
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]

    return {"min": ordered[0], "p5": q(0.05), "median": int(statistics.median(ordered)), "p95": q(0.95),
            "max": ordered[-1], "mean": round(sum(ordered) / len(ordered))}


def _csv_file(path: Path, compress: bool):
    """A text file to write CSV to; gzipped with no timestamp, so the same rows give the same bytes."""
    if compress:
        return io.TextIOWrapper(gzip.GzipFile(path, "wb", compresslevel=9, mtime=0), encoding="utf-8", newline="")
    return open(path, "w", newline="", encoding="utf-8")


def write_archive(out_dir: str | Path, n: int, seed: int = 0, fmt: str = "csv", profile: Profile = BENCHMARK,
                  compress: bool = False) -> dict:
    """Write `notes.<fmt>` and `orders.<fmt>` (`.csv.gz` with `compress`) for `n` notes; returns paths, counts,
    the date range and length statistics."""
    if fmt not in ("csv", "parquet") or (compress and fmt != "csv"):
        raise ValueError(f"unknown format {fmt!r}{' with gzip' if compress else ''} (csv, csv with gzip, or parquet)")
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = f"{fmt}.gz" if compress else fmt
    notes_path, orders_path = out_dir / f"notes.{suffix}", out_dir / f"orders.{suffix}"
    lengths, n_bytes, n_orders, notes_with_orders, patients, dates = [], 0, 0, 0, set(), set()
    cases, styles = Counter(), Counter()

    def count(note: dict, orders: list[dict]) -> None:
        nonlocal n_bytes, n_orders, notes_with_orders
        lengths.append(len(note["text"]))
        n_bytes += len(note["text"].encode("utf-8"))
        n_orders += len(orders)
        notes_with_orders += bool(orders)
        patients.add(note["patient_id"])
        dates.add(note["note_date"])
        cases[note["case"]] += 1
        styles[note["style"]] += 1

    if fmt == "csv":
        with _csv_file(notes_path, compress) as nf, _csv_file(orders_path, compress) as of:
            note_writer = csv.DictWriter(nf, NOTE_FIELDS, extrasaction="ignore")
            order_writer = csv.DictWriter(of, ORDER_FIELDS)
            note_writer.writeheader()
            order_writer.writeheader()
            for note, orders in generate(n, seed, profile):
                note_writer.writerow(note)
                order_writer.writerows(orders)
                count(note, orders)
    else:
        import pandas as pd

        notes, all_orders = [], []
        for note, orders in generate(n, seed, profile):
            notes.append(note)
            all_orders.extend(orders)
            count(note, orders)
        pd.DataFrame(notes, columns=list(NOTE_FIELDS)).to_parquet(notes_path, index=False)
        pd.DataFrame(all_orders, columns=list(ORDER_FIELDS)).to_parquet(orders_path, index=False)
    return {"notes_path": str(notes_path), "orders_path": str(orders_path), "notes": len(lengths), "seed": seed,
            "profile": profile.name, "patients": len(patients), "first_date": min(dates), "last_date": max(dates),
            "cases": dict(cases.most_common()), "styles": dict(styles.most_common()),
            "text_bytes": n_bytes, "orders": n_orders, "notes_with_orders": notes_with_orders,
            "lengths": length_stats(lengths), "seconds": round(time.perf_counter() - started, 2)}


def describe(info: dict) -> str:
    s = info["lengths"]
    return (f"{info['notes']} notes of {info['patients']} patients from {info['first_date']} to {info['last_date']} "
            f"({info['text_bytes'] / 1e6:.1f} MB of text), {info['orders']} orders on "
            f"{info['notes_with_orders']} notes ({100 * info['notes_with_orders'] / max(1, info['notes']):.1f} %); "
            f"length min {s['min']}, p5 {s['p5']}, median {s['median']}, p95 {s['p95']}, max {s['max']} chars; "
            f"{info['profile']} profile, seed {info['seed']}; {info['seconds']} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notes", type=int, default=1000, help="number of notes (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--format", choices=("csv", "parquet"), default="csv")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="benchmark",
                        help="dates, visits, case mix and ordering staff (default benchmark)")
    parser.add_argument("--gzip", action="store_true", help="write notes.csv.gz and orders.csv.gz")
    args = parser.parse_args(argv)
    if args.gzip and args.format != "csv":
        parser.error("--gzip writes CSV only")
    info = write_archive(args.out, args.notes, args.seed, args.format, PROFILES[args.profile], args.gzip)
    print(describe(info))
    print("  cases: " + ", ".join(f"{name} {count}" for name, count in info["cases"].items()))
    print(f"  {info['notes_path']}\n  {info['orders_path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
