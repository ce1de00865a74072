from sdft_core.eval.fact_matcher import contains, normalize, score_facts


def test_normalisation_keeps_decimals_and_drops_thousands_separators():
    assert normalize("Magnitude 7.4, with 4,200 deaths.") == " magnitude 7.4 with 4200 deaths "
    assert contains("It had 4200 victims", "4,200") and contains("magnitude 7.4.", "7.4")
    assert not contains("magnitude 17.4", "7.4") and not contains("Kessrinville", "Kessrin")


def test_strict_and_lenient():
    facts, wrong = [["Kessrin"], ["March 2025", "March of 2025"]], ["Oldrey", "July 2025"]
    both = score_facts("It struck Kessrin in March of 2025.", facts, wrong)
    one = score_facts("It struck Kessrin.", facts, wrong)
    one_and_wrong = score_facts("It struck Kessrin in July 2025.", facts, wrong)
    none = score_facts("I do not know.", facts, wrong)
    assert (both.strict, both.lenient) == (True, True)
    assert (one.strict, one.lenient) == (False, True)
    assert (one_and_wrong.strict, one_and_wrong.lenient) == (False, False)
    assert one_and_wrong.wrong_found == ("July 2025",)
    assert (none.strict, none.lenient) == (False, False)
