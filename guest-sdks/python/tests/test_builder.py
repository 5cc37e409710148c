"""Wallaroo 0.1-0.5 applications: ApplicationBuilder, class-based and 0.4/0.5-decorated steps,
their state semantics and their mistakes; and the 0.6 leftovers (collect, clone, base classes,
the name-first GenSourceConfig)."""

import pickle
import re
import string
import struct

import pytest
from test_runtime import ARGS, SimulatedHost, TwinRuntime, app_module

import wallaroo
from wallaroo import WallarooParameterError


def _line_of(marker):
    with open(__file__) as source:
        return next(number for number, line in enumerate(source, 1) if marker in line)


def frame(text):
    return text.encode()


# ------------------------------------------------------------------------------------------------
# Class-based steps (0.1-0.3)


class LineDecoder:
    def header_length(self):
        return 4

    def payload_length(self, bs):
        return struct.unpack(">I", bs)[0]

    def decode(self, bs):
        return bs.decode()


class Split:
    def name(self):
        return "split"

    def compute_multi(self, text):
        return text.split()


class Upper:
    def name(self):
        return "upper"

    def compute(self, word):
        return None if word == "skip" else word.upper()


class FirstLetter:
    def partition(self, word):
        return word[0]


class Letters:
    """Per-partition state: the counts of the words of one first letter."""

    built = 0

    def __init__(self):
        Letters.built += 1
        self.counts = {}


class LettersBuilder:
    def build(self):
        return Letters()


class CountWord:
    def name(self):
        return "count word"

    def compute(self, word, letters):
        letters.counts[word] = letters.counts.get(word, 0) + 1
        return (f"{word}={letters.counts[word]}", True)


class TextEncoder:
    def encode(self, data):
        return data + "\n"  # a str, as Python 2 encoders returned


def class_based_setup(args):
    ab = wallaroo.ApplicationBuilder("words")
    ab.new_pipeline("lines", wallaroo.TCPSourceConfig("h", "1", LineDecoder()))
    ab.to_parallel(Split)  # a class: made into an instance
    ab.to(Upper())
    ab.to_state_partition(CountWord(), LettersBuilder(), "letters", FirstLetter(), ["A", "B"])
    ab.to_sink(wallaroo.TCPSinkConfig("h", "2", TextEncoder))
    ab.done()
    return ab.build()


def test_a_class_based_application_runs_and_gives_the_0_6_step_table():
    host = SimulatedHost(app_module(class_based_setup))
    assert [(s.name, s.kind) for s in host.spec.steps] == [
        ("LineDecoder", "decoder"),
        ("split", "stateless"),
        ("upper", "stateless"),
        ("FirstLetter", "key-by"),
        ("count word", "stateful"),
        ("TextEncoder", "encoder"),
    ]
    assert host.spec.sources[0].config == ("tcp", "h", "1", 4, 4, True)
    host.send([frame("a b skip a"), frame("bb c")])
    assert host.output() == b"A=1\nB=1\nA=2\nBB=1\nC=1\n"
    assert not host.failures


def test_declared_partition_keys_have_state_from_the_start_and_others_on_first_sight():
    Letters.built = 0
    runtime = TwinRuntime(app_module(class_based_setup))
    runtime.describe(ARGS)
    assert Letters.built == 2 * 2  # keys A and B, in each of the twin runtimes
    assert runtime.snapshot_changed() == []  # made, not changed
    [(step, key, state)] = runtime.take([(4, b"A")])
    assert (step, key, pickle.loads(state).counts) == (4, b"A", {})
    assert runtime.take([(4, b"C")]) == []
    host = SimulatedHost(app_module(class_based_setup))
    host.send([frame("c")])
    changed = {key: pickle.loads(state).counts for _, key, state in host.runtime.snapshot_changed()}
    assert changed == {b"C": {"C": 1}}


# ------------------------------------------------------------------------------------------------
# Decorated steps (0.4/0.5)


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode(bs):
    return bs.decode()


@wallaroo.computation_multi(name="split")
def split(text):
    return text.split()


@wallaroo.partition
def whole_word(word):
    return word


class Total:
    def __init__(self):
        self.count = 0


@wallaroo.state_computation(name="count")
def count(word, total):
    total.count += 1
    if word == "quiet":
        return (None, True)
    return (f"{word}={total.count}", True)


@wallaroo.state_computation_multi(name="count twice")
def count_twice(word, total):
    total.count += 1
    return ([f"{word}={total.count}", f"{word}!"], True)


@wallaroo.encoder
def encode(data):
    return (data + "\n").encode()


def decorated_setup(computation, state=Total, keys=None):
    def setup(args):
        ab = wallaroo.ApplicationBuilder("words")
        ab.new_pipeline("lines", wallaroo.TCPSourceConfig("h", "1", decode))
        ab.to_parallel(split)
        ab.to_state_partition(computation, state, "totals", whole_word, keys)
        ab.to_sink(wallaroo.TCPSinkConfig("h", "2", encode))
        return ab.build()

    return app_module(setup)


def test_a_decorated_application_counts_with_keys_made_on_first_sight():
    host = SimulatedHost(decorated_setup(count))
    host.send([frame("a b a quiet a quiet")])
    assert host.output() == b"a=1\nb=1\na=2\na=3\n"
    host = SimulatedHost(decorated_setup(count_twice))
    host.send([frame("a a")])
    assert host.output() == b"a=1\na!\na=2\na!\n"


def test_to_stateful_keeps_one_state_for_the_whole_step():
    def setup(args):
        ab = wallaroo.ApplicationBuilder("words")
        ab.new_pipeline("lines", wallaroo.TCPSourceConfig("h", "1", decode))
        ab.to_parallel(split)
        ab.to_stateful(count, Total, "one total")
        ab.to_sink(wallaroo.TCPSinkConfig("h", "2", encode))
        return ab.build()

    host = SimulatedHost(app_module(setup))
    host.send([frame("a b c"), frame("a")])
    assert host.output() == b"a=1\nb=2\nc=3\na=4\n"
    [(_, key, state)] = host.runtime.snapshot_changed()
    assert (key, pickle.loads(state).count) == (b"one total", 4)


def test_a_state_computation_returning_a_bare_value_fails_naming_it_and_what_was_expected():
    @wallaroo.state_computation(name="bare")  # BARE IS HERE
    def bare(word, total):
        return word

    host = SimulatedHost(decorated_setup(bare))
    host.send([frame("a")])
    [(_tag, _index, _step, key, error)] = host.failures
    assert key == b"a"
    assert error == (
        f"WallarooParameterError: state_computation 'bare' (test_builder.py:"
        f"{_line_of('BARE IS HERE')}) returned str, expected a tuple (result, state_changed), "
        "e.g. return (output, True)"
    )


def test_a_class_based_state_computation_returning_a_bare_value_names_its_class():
    class Bare:
        def name(self):
            return "bare"

        def compute(self, word, total):  # CLASS BARE IS HERE
            return word

    host = SimulatedHost(decorated_setup(Bare()))
    host.send([frame("a")])
    [(_tag, _index, _step, _key, error)] = host.failures
    assert (
        "state computation 'bare' (class Bare.compute, "
        f"test_builder.py:{_line_of('CLASS BARE IS HERE')}) returned str, expected a tuple"
    ) in error


def test_an_exception_in_a_class_based_step_names_the_users_line():
    class Fragile:
        def name(self):
            return "fragile"

        def compute(self, word, total):
            raise ValueError(word)  # FRAGILE RAISES HERE

    host = SimulatedHost(decorated_setup(Fragile))
    host.send([frame("x")])
    [(_tag, _index, _step, _key, error)] = host.failures
    assert error == (
        f"ValueError: x (test_builder.py:{_line_of('FRAGILE RAISES HERE')} in compute)"
    )


# ------------------------------------------------------------------------------------------------
# Misuse, explained at set-up


def build_with(step, method="to"):
    ab = wallaroo.ApplicationBuilder("app")
    ab.new_pipeline("p", wallaroo.TCPSourceConfig("h", "1", decode))
    if method == "to":
        ab.to(step)
    else:
        ab.to_stateful(step, Total, "s")
    ab.to_sink(wallaroo.TCPSinkConfig("h", "2", encode))
    return ab.build()


class NoCompute:  # NO COMPUTE IS HERE
    def name(self):
        return "nothing"


class WrongArity:
    def name(self):
        return "wrong"

    def compute(self, data, state):  # WRONG ARITY IS HERE
        return data


class NeedsArguments:
    def __init__(self, size):  # NEEDS ARGUMENTS IS HERE
        self.size = size


def test_a_class_without_compute_is_named_with_its_file_and_line():
    with pytest.raises(WallarooParameterError) as raised:
        build_with(NoCompute())
    assert re.fullmatch(
        r"to\(\): class NoCompute \(test_builder\.py:\d+\) has no compute\(\) or "
        r"compute_multi\(\) method \(compute\(data\) returns one output or None, "
        r"compute_multi\(data\) a list\)",
        str(raised.value),
    ), raised.value


def test_a_compute_of_the_wrong_arity_is_named():
    with pytest.raises(WallarooParameterError) as raised:
        build_with(WrongArity)
    assert str(raised.value) == (
        f"to(): class WrongArity (test_builder.py:{_line_of('WRONG ARITY IS HERE')}): "
        "compute() must take 1 parameter besides self, it takes 2"
    )
    with pytest.raises(WallarooParameterError, match=r"compute\(\) must take 2 parameters"):
        build_with(Upper(), method="to_stateful")


def test_a_class_that_cannot_be_made_without_arguments_asks_for_an_instance():
    with pytest.raises(WallarooParameterError) as raised:
        build_with(NeedsArguments)
    assert re.fullmatch(
        r"to\(\): class NeedsArguments \(test_builder\.py:\d+\) was given as a class, and "
        r"making an instance of it failed \(TypeError: .*\); pass an instance instead",
        str(raised.value),
    ), raised.value


def test_state_and_stateless_steps_are_not_confused():
    with pytest.raises(WallarooParameterError, match="is a state computation: use to_stateful"):
        build_with(count)
    with pytest.raises(WallarooParameterError, match="is stateless: use to or to_parallel"):
        build_with(wallaroo.computation("c")(lambda x: x), method="to_stateful")


def test_a_04_state_computation_in_a_06_pipeline_asks_for_its_state_class():
    lines = wallaroo.source("p", wallaroo.TCPSourceConfig("h", "1", decode))
    with pytest.raises(WallarooParameterError, match=r"has no state class: .*state=StateClass"):
        lines.to(count)


def test_decorated_legacy_steps_check_their_arity():
    with pytest.raises(WallarooParameterError, match="must take 2 parameters, it takes 1"):
        wallaroo.state_computation("s")(lambda data: data)
    with pytest.raises(WallarooParameterError, match="partition '<lambda>'.*must take 1"):
        wallaroo.partition(lambda a, b: a)


def test_the_builder_needs_a_pipeline_before_steps_and_a_sink_somewhere():
    ab = wallaroo.ApplicationBuilder("app")
    with pytest.raises(WallarooParameterError, match=r"call new_pipeline\(name, source_config\)"):
        ab.to(Upper())
    ab.new_pipeline("p", wallaroo.TCPSourceConfig("h", "1", decode)).to(Upper()).done()
    with pytest.raises(WallarooParameterError, match="after a sink or done"):
        ab.to(Upper())
    with pytest.raises(WallarooParameterError, match=r"at least one pipeline must end with"):
        ab.build()
    with pytest.raises(WallarooParameterError, match="a pipeline of that name exists"):
        ab.new_pipeline("p", wallaroo.TCPSourceConfig("h", "1", decode))


def test_a_state_shared_by_name_needs_the_same_state_class():
    ab = wallaroo.ApplicationBuilder("app")
    ab.new_pipeline("p", wallaroo.TCPSourceConfig("h", "1", decode))
    ab.to_stateful(count, Total, "s")
    with pytest.raises(WallarooParameterError, match="steps sharing a state must give the same"):
        ab.to_stateful(count, Letters, "s")
    with pytest.raises(WallarooParameterError, match="cannot also be used by a partition step"):
        ab.to_state_partition(count, Total, "s", whole_word)


# ------------------------------------------------------------------------------------------------
# A state shared by two pipelines (Wallaroo's market spread)


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode_quote(bs):
    symbol, price = bs.decode().split()
    return ("quote", symbol, int(price))


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode_order(bs):
    symbol, price = bs.decode().split()
    return ("order", symbol, int(price))


@wallaroo.partition
def symbol(message):
    return message[1]


class Symbol:
    def __init__(self):
        self.price = None


@wallaroo.state_computation(name="update price")
def update_price(quote, state):
    state.price = quote[2]
    return ("updated", True)


@wallaroo.state_computation(name="check order")
def check_order(order, state):
    if state.price is None or order[2] < state.price:
        return (f"reject {order[1]} {order[2]} (price {state.price})", False)
    return (None, False)


def market_setup(args):
    ab = wallaroo.ApplicationBuilder("market")
    ab.new_pipeline("orders", wallaroo.TCPSourceConfig("h", "1", decode_order))
    ab.to_state_partition(check_order, Symbol, "symbols", symbol, ["AB", "CD"])
    ab.to_sink(wallaroo.TCPSinkConfig("h", "3", encode))
    ab.new_pipeline("quotes", wallaroo.TCPSourceConfig("h", "2", decode_quote))
    ab.to_state_partition(update_price, Symbol, "symbols", symbol, ["AB", "CD"])
    ab.done()
    return ab.build()


def test_two_pipelines_naming_one_state_share_it_and_keep_their_own_outputs():
    host = SimulatedHost(app_module(market_setup))
    assert [s.name for s in host.spec.sources] == ["orders", "quotes"]
    assert [s.kind for s in host.spec.steps].count("stateful") == 1
    host.send([frame("AB 5")], source="orders")
    host.send([frame("AB 10"), frame("CD 3")], source="quotes")
    host.send([frame("AB 7"), frame("AB 11"), frame("CD 2"), frame("EF 1")], source="orders")
    assert host.output() == (
        b"reject AB 5 (price None)\nreject AB 7 (price 10)\nreject CD 2 (price 3)\n"
        b"reject EF 1 (price None)\n"
    )
    assert not host.failures


def test_states_used_in_opposite_orders_are_refused():
    def setup(args):
        ab = wallaroo.ApplicationBuilder("loop")
        ab.new_pipeline("one", wallaroo.TCPSourceConfig("h", "1", decode))
        ab.to_stateful(count, Total, "x").to_stateful(count, Total, "y")
        ab.to_sink(wallaroo.TCPSinkConfig("h", "2", encode))
        ab.new_pipeline("two", wallaroo.TCPSourceConfig("h", "3", decode))
        ab.to_stateful(count, Total, "y").to_stateful(count, Total, "x").done()
        return ab.build()

    with pytest.raises(WallarooParameterError, match="opposite orders"):
        setup(ARGS)


# ------------------------------------------------------------------------------------------------
# Partition keys


def test_u64_partitions_take_integer_keys():
    @wallaroo.partition
    def length(word):
        return len(word)

    def setup(args):
        ab = wallaroo.ApplicationBuilder("lengths")
        ab.new_pipeline("lines", wallaroo.TCPSourceConfig("h", "1", decode))
        ab.to_parallel(split)
        ab.to_state_partition_u64(count, Total, "by length", length, [1, 2, 3])
        ab.to_sink(wallaroo.TCPSinkConfig("h", "2", encode))
        return ab.build()

    runtime = TwinRuntime(app_module(setup))
    runtime.describe(ARGS)
    assert [key for _, key, _ in runtime.take([(3, b"1"), (3, b"2"), (3, b"4")])] == [b"1", b"2"]
    host = SimulatedHost(app_module(setup))
    host.send([frame("a bb c dddd")])
    assert host.output() == b"a=1\nbb=1\nc=2\ndddd=1\n"
    assert {key for _, key, _ in host.runtime.snapshot_changed()} == {b"1", b"2", b"4"}
    with pytest.raises(WallarooParameterError, match="partition key 'a'.*not a non-negative int"):
        wallaroo.ApplicationBuilder("x").new_pipeline(
            "p", wallaroo.TCPSourceConfig("h", "1", decode)
        ).to_state_partition_u64(count, Total, "s", length, ["a"])


def test_integer_partition_keys_become_characters_as_in_wallaroo():
    @wallaroo.partition
    def code_point(word):
        return ord(word[0])

    runtime = TwinRuntime(
        app_module(
            lambda args: (
                wallaroo.ApplicationBuilder("x")
                .new_pipeline("p", wallaroo.TCPSourceConfig("h", "1", decode))
                .to_state_partition(count, Total, "s", code_point, [97])
                .to_sink(wallaroo.TCPSinkConfig("h", "2", encode))
                .build()
            )
        )
    )
    runtime.describe(ARGS)
    assert [key for _, key, _ in runtime.take([(2, b"a")])] == [b"a"]


# ------------------------------------------------------------------------------------------------
# Class-based decoders: the frame format read off payload_length


def decoder_of(header, fmt):
    class Framed:
        def header_length(self):
            return header

        def payload_length(self, bs):
            return struct.unpack(fmt, bs[: struct.calcsize(fmt)])[0]

        def decode(self, bs):
            return bs

    return Framed()


@pytest.mark.parametrize(
    ("header", "fmt", "framing"),
    [
        (4, ">I", (4, 4, True)),
        (4, "<I", (4, 4, False)),
        (2, ">H", (2, 2, True)),
        (8, "<H", (8, 2, False)),
        (1, "B", (1, 1, True)),
        (8, ">Q", (8, 8, True)),
        (4, "!i", (4, 4, True)),
    ],
)
def test_a_class_based_decoders_framing_is_read_off_its_payload_length(header, fmt, framing):
    def setup(args):
        lines = wallaroo.source("in", wallaroo.TCPSourceConfig("h", "1", decoder_of(header, fmt)))
        return wallaroo.build_application(
            "app", lines.to_sink(wallaroo.TCPSinkConfig("h", "2", encode))
        )

    spec = TwinRuntime(app_module(setup)).describe(ARGS)
    assert spec.sources[0].config == ("tcp", "h", "1", *framing)


def test_a_length_not_at_the_start_of_the_header_is_refused():
    class Offset:
        def header_length(self):
            return 6

        def payload_length(self, bs):
            return struct.unpack(">I", bs[2:])[0]

        def decode(self, bs):
            return bs

    with pytest.raises(
        WallarooParameterError, match=r"decoder Offset .*at the start of the header"
    ):
        wallaroo.TCPSourceConfig("h", "1", Offset())


# ------------------------------------------------------------------------------------------------
# 0.6 leftovers


class SplitWords(wallaroo.ComputationMulti):
    def name(self):
        return "split words"

    def compute_multi(self, text):
        return text.split()


class ByWord(wallaroo.KeyExtractor):
    def extract_key(self, word):
        return word


class Counter(wallaroo.StateComputation):
    def name(self):
        return "counter"

    def initial_state(self):
        return Total()

    def compute(self, word, total):
        total.count += 1
        return f"{word}={total.count}"


class Lines(wallaroo.OctetDecoder):
    def header_length(self):
        return 4

    def payload_length(self, bs):
        return struct.unpack(">I", bs)[0]

    def decode(self, bs):
        return bs.decode()


class Newline(wallaroo.OctetEncoder):
    def encode(self, data):
        return data + "\n"


def test_06_applications_may_subclass_the_base_classes():
    def setup(args):
        lines = wallaroo.source("in", wallaroo.TCPSourceConfig("h", "1", Lines()))
        pipeline = lines.to(SplitWords()).key_by(ByWord).to(Counter())
        return wallaroo.build_application(
            "app", pipeline.to_sink(wallaroo.TCPSinkConfig("h", "2", Newline()))
        )

    host = SimulatedHost(app_module(setup))
    assert [s.kind for s in host.spec.steps] == [
        "decoder",
        "stateless",
        "key-by",
        "stateful",
        "encoder",
    ]
    host.send([frame("a b a")])
    assert host.output() == b"a=1\nb=1\na=2\n"


def test_collect_sends_every_message_to_one_state_and_clone_is_the_same_pipeline():
    @wallaroo.state_computation(name="total", state=Total)
    def total(word, state):
        state.count += 1
        return f"{word}={state.count}"

    def setup(args):
        lines = wallaroo.source("in", wallaroo.TCPSourceConfig("h", "1", decode))
        words = lines.to(split).clone()
        pipeline = words.key_by(wallaroo.key_extractor(lambda w: w)).collect().to(total)
        return wallaroo.build_application(
            "app", pipeline.to_sink(wallaroo.TCPSinkConfig("h", "2", encode))
        )

    host = SimulatedHost(app_module(setup))
    host.send([frame("a b a c")])
    assert host.output() == b"a=1\nb=2\na=3\nc=4\n"
    assert [(s.name, s.kind) for s in host.spec.steps][3] == ("collect", "key-by")


def test_serialize_round_trips():
    assert wallaroo.deserialize(wallaroo.serialize({"a": [1, 2]})) == {"a": [1, 2]}


class Countdown:
    def initial_value(self):
        return 3

    def apply(self, previous):
        return previous - 1 if previous > 1 else None


@pytest.mark.parametrize(
    "config",
    [
        lambda: wallaroo.GenSourceConfig(Countdown()),
        lambda: wallaroo.GenSourceConfig("countdown", Countdown()),
        lambda: wallaroo.GenSourceConfig("countdown", Countdown),
    ],
    ids=["0.6", "name first", "a class"],
)
def test_a_generator_source_takes_either_form(config):
    @wallaroo.encoder
    def number(n):
        return f"{n}\n"

    def setup(args):
        numbers = wallaroo.source("numbers", config())
        return wallaroo.build_application(
            "app", numbers.to_sink(wallaroo.TCPSinkConfig("h", "2", number))
        )

    host = SimulatedHost(app_module(setup))
    assert host.spec.sources[0].config == ("generator",)
    host.send([b""] * 5)
    assert host.output() == b"3\n2\n1\n"


def test_a_generator_source_with_other_arguments_is_explained():
    with pytest.raises(WallarooParameterError, match=r"takes \(generator\) or \(name, generator\)"):
        wallaroo.GenSourceConfig("a", Countdown(), 3)
    with pytest.raises(
        WallarooParameterError, match=r"class Bad \(test_builder\.py:\d+\) has no initial_value\(\)"
    ):

        class Bad:
            pass

        wallaroo.GenSourceConfig("name", Bad())


def test_word_partitions_of_the_wallaroo_examples_are_accepted():
    # Wallaroo's word counts declare a to z and "!" as their partition keys.
    keys = list(string.ascii_lowercase) + ["!"]
    runtime = TwinRuntime(decorated_setup(count, keys=keys))
    runtime.describe(ARGS)
    assert len(runtime.take([(3, key.encode()) for key in keys])) == 27


class TotalBuilder:
    def name(self):
        return "total builder"

    def build(self):
        return Total()


@pytest.mark.parametrize("state", [Total, TotalBuilder(), TotalBuilder, lambda: Total()])
def test_a_state_is_made_by_a_class_a_builder_instance_or_class_or_a_function(state):
    host = SimulatedHost(decorated_setup(count, state=state))
    host.send([frame("a a")])
    assert host.output() == b"a=1\na=2\n"


# ------------------------------------------------------------------------------------------------
# Misuse found by use


def test_one_state_used_twice_in_one_pipeline_is_explained_as_such():
    ab = wallaroo.ApplicationBuilder("same twice")
    ab.new_pipeline("p", wallaroo.TCPSourceConfig("h", "1", decode))
    ab.to_stateful(count, Total, "a").to(Upper())
    with pytest.raises(WallarooParameterError) as raised:
        ab.to_stateful(count, Total, "a")
    assert str(raised.value) == (
        "to_stateful(state_name='a'): pipeline 'p' uses state 'a' already, at its step 1 "
        f"(state_computation 'count' (test_builder.py:{_line_of('def count(word, total)') - 1})); "
        "a state's step can take part in a pipeline only once, since the step would have to "
        "feed itself: give this step a state name of its own, or do both computations in the "
        "one step"
    )


class BuildsSomething:  # BUILDS SOMETHING IS HERE
    def __init__(self):
        self.counts = {}

    def build(self):
        return "built"


class EmptyInit:  # EMPTY INIT IS HERE
    def __init__(self):
        pass

    def build(self):
        return Total()


@wallaroo.state_computation(name="count letters")
def count_letters(word, state):
    state.counts[word] = state.counts.get(word, 0) + 1
    return (f"{word}={state.counts[word]}", True)


def test_a_state_class_with_attributes_and_a_build_method_is_the_state():
    host = SimulatedHost(decorated_setup(count_letters, state=BuildsSomething))
    host.send([frame("a a b")])
    assert not host.failures
    assert host.output() == b"a=1\na=2\nb=1\n"


def test_a_class_that_may_be_a_state_or_a_builder_is_refused_naming_it():
    with pytest.raises(WallarooParameterError) as raised:
        decorated_setup(count, state=EmptyInit).application_setup(ARGS)
    assert str(raised.value) == (
        "to_state_partition(state_name='totals'): class EmptyInit (test_builder.py:"
        f"{_line_of('EMPTY INIT IS HERE')}) has __init__ and build() but its instances "
        "have no attributes, so it may be a state class or a state builder: pass an "
        "instance, EmptyInit(), if its build() makes the state, or set the state's "
        "attributes in __init__ if it is the state itself"
    )


class NeedsStart:  # NEEDS START IS HERE
    def __init__(self, start):
        self.count = start


def test_a_state_class_that_needs_arguments_is_named_at_setup():
    expected = (
        "class NeedsStart (test_builder.py:{line}) is the state class, and a state class "
        "must be constructible with no arguments: its __init__ takes 1 (start); give "
        "start a default, or pass a state builder whose build() makes the state"
    ).format(line=_line_of("NEEDS START IS HERE"))
    for keys in (None, ["a"]):
        with pytest.raises(WallarooParameterError) as raised:
            decorated_setup(count, state=NeedsStart, keys=keys).application_setup(ARGS)
        assert str(raised.value) == f"to_state_partition(state_name='totals'): {expected}"
    with pytest.raises(WallarooParameterError) as raised:
        wallaroo.state_computation("c", state=NeedsStart)(lambda data, state: data)
    assert str(raised.value) == f"state_computation 'c': {expected}"


def test_a_state_changed_flag_that_is_not_a_bool_is_a_failure_naming_the_function():
    @wallaroo.state_computation(name="counted")  # COUNTED IS HERE
    def counted(word, total):
        total.count += 2
        return (word, total.count)

    host = SimulatedHost(decorated_setup(counted))
    host.send([frame("a")])
    [(_tag, _index, _step, key, error)] = host.failures
    assert key == b"a"
    assert error == (
        f"WallarooParameterError: state_computation 'counted' (test_builder.py:"
        f"{_line_of('COUNTED IS HERE')}) returned a tuple whose second element is int 2, "
        "expected (result, state_changed) with state_changed True or False (or 1 or 0); "
        "to output a tuple, return (the_tuple, True)"
    )
    assert host.output() == b""


def test_a_state_changed_flag_written_as_an_int_is_taken_as_python_2_apps_wrote_it():
    @wallaroo.state_computation(name="counted")
    def counted(word, total):
        total.count += 1
        return (f"{word}={total.count}", 1 if total.count < 2 else 0)

    host = SimulatedHost(decorated_setup(counted))
    host.send([frame("a a")])
    assert host.failures == []
    assert host.output() == b"a=1\na=2\n"


def test_a_plain_function_as_a_builder_step_asks_for_the_decorator():
    ab = wallaroo.ApplicationBuilder("app")
    ab.new_pipeline("p", wallaroo.TCPSourceConfig("h", "1", decode))
    with pytest.raises(WallarooParameterError) as raised:
        ab.to(lambda x: x)  # LAMBDA IS HERE
    assert str(raised.value) == (
        f"to(): function '<lambda>' (test_builder.py:{_line_of('LAMBDA IS HERE')}) is a "
        "plain function: decorate it with @wallaroo.computation(name) (or "
        "@wallaroo.computation_multi(name)), or give a class with name() and compute(data)"
    )
    with pytest.raises(WallarooParameterError, match=r"@wallaroo\.state_computation\(name\)"):
        ab.to_stateful(lambda word, total: (word, True), Total, "s")


def test_a_class_is_reported_at_its_class_line():
    assert wallaroo._builder.where(BuildsSomething) == (
        f" (test_builder.py:{_line_of('BUILDS SOMETHING IS HERE')})"
    )
    assert wallaroo._builder.where(BuildsSomething()) == (
        f" (test_builder.py:{_line_of('BUILDS SOMETHING IS HERE')})"
    )


class NoArgumentApply:
    def initial_value(self):
        return 1

    def apply(self):  # NO ARGUMENT APPLY IS HERE
        return 2


class ArgumentInitial:
    def initial_value(self, seed):
        return seed

    def apply(self, previous):
        return previous


def test_a_generator_of_the_wrong_arity_is_refused_at_setup():
    with pytest.raises(WallarooParameterError) as raised:
        wallaroo.GenSourceConfig("numbers", NoArgumentApply)
    assert str(raised.value) == (
        "GenSourceConfig: class NoArgumentApply (test_builder.py:"
        f"{_line_of('NO ARGUMENT APPLY IS HERE')}): apply() must take 1 parameter besides "
        "self, it takes 0"
    )
    with pytest.raises(WallarooParameterError, match=r"initial_value\(\) must take 0 parameters"):
        wallaroo.GenSourceConfig(ArgumentInitial())
