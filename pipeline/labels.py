"""The shared vocabulary: canonical labels, assertions and how history counts (findings contract)."""

LABELS = (
    "LOW_BACK_PAIN",
    "RADICULOPATHY",
    "NEUROGENIC_CLAUDICATION",
    "FOOT_DROP",
    "MOTOR_WEAKNESS",
    "SENSORY_DEFICIT",
    "SADDLE_ANESTHESIA",
    "BLADDER_DYSFUNCTION",
    "BOWEL_DYSFUNCTION",
    "CAUDA_EQUINA",
    "CANCER_HISTORY",
    "WEIGHT_LOSS",
    "FEVER",
    "SPINAL_INFECTION",
    "IV_DRUG_USE",
    "IMMUNOSUPPRESSION",
    "NIGHT_PAIN",
    "TRAUMA",
    "OSTEOPOROSIS",
    "STEROID_USE",
    "PRIOR_LUMBAR_SURGERY",
    "CONSERVATIVE_THERAPY_FAILED",
    "MRI_CONTRAINDICATION",
)

# Labels whose historical mentions still make the flag true for the patient now
# ("Counts when historical" in the findings contract).
COUNTS_WHEN_HISTORICAL = frozenset({
    "LOW_BACK_PAIN",
    "CANCER_HISTORY",
    "IV_DRUG_USE",
    "IMMUNOSUPPRESSION",
    "OSTEOPOROSIS",
    "STEROID_USE",
    "PRIOR_LUMBAR_SURGERY",
    "CONSERVATIVE_THERAPY_FAILED",
    "MRI_CONTRAINDICATION",
})

NEURO_DEFICITS = ("FOOT_DROP", "MOTOR_WEAKNESS", "SENSORY_DEFICIT")

ASSERTIONS = ("present", "negated", "possible", "hypothetical", "historical", "family")
LATERALITIES = ("left", "right", "bilateral", "unspecified")
STATUSES = ("present", "possible", "absent")

# ConText categories → assertion, in order of precedence when several modify one target.
CONTEXT_ASSERTIONS = (
    ("FAMILY", "family"),
    ("HYPOTHETICAL", "hypothetical"),
    ("NEGATED_EXISTENCE", "negated"),
    ("POSSIBLE_EXISTENCE", "possible"),
    ("HISTORICAL", "historical"),
)

# Section categories that decide the assertion of what they contain (see patterns/sections.json).
SECTION_ASSERTIONS = {
    "fhx": "family",
    "pmh": "historical",
    "psh": "historical",
    "instructions": "hypothetical",
    "copied": "historical",  # text copied forward from an earlier note describes that visit
}
