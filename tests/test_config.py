import pytest
import yaml

from pase.config import Config, ConfigError, apply_overrides, from_dict, load_config, to_dict


def test_defaults_round_trip():
    cfg = Config()
    assert from_dict(to_dict(cfg)) == cfg


def test_unknown_key_names_key_and_closest(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'train.lrr'; did you mean 'train.lr'\?"):
        apply_overrides(Config(), ["train.lrr=0.1"])
    p = tmp_path / "c.yaml"
    p.write_text("modle:\n  d_model: 8\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown config key 'modle'; did you mean 'model'"):
        load_config(p)


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match=r"'train.max_epochs' must be int, got str"):
        apply_overrides(Config(), ["train.max_epochs=ten"])
    with pytest.raises(ConfigError, match=r"'pase.sgm' must be bool"):
        apply_overrides(Config(), ["pase.sgm=3"])


def test_int_widens_to_float_and_yaml_scalars_parse():
    cfg = apply_overrides(Config(), ["train.lr=1", "pase.sgm=false", "data.options.sizes=[10,5,5]",
                                     "data.modalities=[text,audio]"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.pase.sgm is False
    assert cfg.data.options == {"sizes": [10, 5, 5]}
    assert cfg.data.modalities == ["text", "audio"]


def test_exponent_notation_without_a_dot_is_a_float(tmp_path):
    """YAML 1.1 reads 1e-5 as a string; float settings accept it (from --set and from a file)."""
    cfg = apply_overrides(Config(), ["train.lr=1e-5", "train.grad_clip=+2.5E+1"])
    assert (cfg.train.lr, cfg.train.grad_clip) == (1e-5, 25.0)
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lr: 3e-4\n")
    assert load_config(p).train.lr == 3e-4
    for bad in ("1e-5x", "nan", "inf", "fast"):
        with pytest.raises(ConfigError, match=r"'train.lr' must be float, got str"):
            apply_overrides(Config(), [f"train.lr={bad}"])


@pytest.mark.parametrize("override, message", [
    ("pase.tau=-1", "'pase.tau' must be a number above 0, got -1"),
    ("pase.ot_reg=0", "'pase.ot_reg' must be a number above 0, got 0"),
    ("pase.lambda_ot=.nan", "'pase.lambda_ot' must be a number at least 0, got nan"),
    ("pase.lambda_pcl=-1", "'pase.lambda_pcl' must be a number at least 0"),
    ("train.lr=-0.1", "'train.lr' must be a number at least 0"),
    ("train.grad_clip=-1", "'train.grad_clip' must be a number at least 0"),
    ("model.dropout=1", "'model.dropout' must be in [0, 1), got 1"),
    ("pase.momentum=1.5", "'pase.momentum' must be in [0, 1)"),
    ("baselines.agm_momentum=-0.1", "'baselines.agm_momentum' must be in [0, 1)"),
    ("data.modalities=[]", "'data.modalities' is an empty list"),
    ("data.modalities=[text,text]", "'data.modalities' names 'text' twice"),
    ("train.precision=17", "'train.precision' must be one of 32-true, 16-mixed"),
    ("train.devices=abc", "'train.devices' must be a count of at least 1, -1 (all), 'auto'"),
    ("train.devices=0", "'train.devices' must be a count of at least 1"),
    ("train.devices=[0,-1]", "'train.devices' must be a count of at least 1"),
])
def test_values_outside_their_range_are_named(override, message):
    """Before, each of these trained without a word (a negative temperature, learning rate or
    clipping norm; [] meant every modality, [text, text] text alone) or stopped later as a
    non-finite loss that blamed the learning rate or the data."""
    with pytest.raises(ConfigError) as e:
        apply_overrides(Config(), [override])
    assert message in str(e.value)


@pytest.mark.parametrize("override", ["train.precision=16", "train.precision=bf16-mixed", "train.devices=auto",
                                      "train.devices=-1", "train.devices=[0,1]", "train.devices='0,1'",
                                      "train.devices='0, 1'", "train.devices='1, 2,'"])
def test_lightnings_device_and_precision_settings_are_accepted(override):
    apply_overrides(Config(), [override])


@pytest.mark.parametrize("text, message", [
    ("train:\n  1: 3\n", "config key 1 under train is not a name (YAML read it as int); valid keys there: max_epochs"),
    ("true: 3\n", "config key True under the top level is not a name (YAML read it as bool)"),
    ("data:\n  options:\n    2: x\n", "config key 'data.options' has the key 2, which YAML read as int"),
])
def test_a_key_yaml_reads_as_a_number_is_named(tmp_path, text, message):
    """Before: 'can only concatenate str (not "int") to str'."""
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value).startswith(f"{p}: ") and message in str(e.value)


@pytest.mark.parametrize("value", ["false", "[]", "0", "''"])
def test_a_section_that_is_not_a_mapping_is_refused_not_read_as_defaults(tmp_path, value):
    """`pase: false` (meaning "PaSE off"?) loaded as every PaSE part on: a falsy section was read
    as all defaults (review). An empty section (`pase:`, null) still means the defaults."""
    p = tmp_path / "c.yaml"
    p.write_text(f"method: pase\npase: {value}\n")
    with pytest.raises(ConfigError, match=r"config section pase must be a mapping of its keys \(for example pase: "):
        load_config(p)
    p.write_text("method: pase\npase:\n")
    assert load_config(p).pase == Config().pase


def test_a_folder_given_as_the_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=rf"config file '{tmp_path}' is a folder; pass a YAML file"):
        load_config(tmp_path)


def test_a_key_given_twice_in_a_config_file_is_refused(tmp_path):
    """PyYAML keeps the last of a repeated key: a second train: section dropped the first one's lr
    and batch_size without a word."""
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lr: 0.01\n  batch_size: 16\ntrain:\n  seed: 7\n")
    with pytest.raises(ConfigError, match=r"c.yaml: not valid YAML \(key 'train' appears twice \(lines 1 and 4\); "
                                          r"keep one of them at line 4, column 1\)"):
        load_config(p)
    p.write_text("train:\n  lr: 0.01\n  lr: 0.02\n")
    with pytest.raises(ConfigError, match=r"key 'lr' appears twice \(lines 2 and 3\)"):
        load_config(p)
    p.write_text("train:\n\tlr: 0.1\n")  # the YAML problem and its place, not only what PyYAML was reading
    with pytest.raises(ConfigError, match=r"found character '\\t' that cannot start any token at line 2, column 1"):
        load_config(p)
    p.write_bytes(b"train:\n  lr: \xff\n")
    with pytest.raises(ConfigError, match=r"c.yaml: not UTF-8 text \(byte 13\); save the config as UTF-8"):
        load_config(p)
    with pytest.raises(ConfigError, match=r"override 'train.lr=\[1,2': the value is not valid YAML \(expected"):
        apply_overrides(Config(), ["train.lr=[1,2"])


def test_yaml_merge_keys_load_as_in_pyyamls_safe_loader(tmp_path):
    """`<<:` was refused as "not valid YAML (could not determine a constructor for the tag
    'tag:yaml.org,2002:merge')" (review): the duplicate-key check built every key before PyYAML
    merged them. A key written next to the merge wins; a key written twice is still refused."""
    p = tmp_path / "c.yaml"
    p.write_text("train: &t\n  lr: 0.01\n  <<: {max_epochs: 1, lr: 0.5}\nmodel:\n  <<: [{d_model: 8}, {hidden: 16}]\n")
    cfg = load_config(p)
    assert (cfg.train.lr, cfg.train.max_epochs, cfg.model.d_model, cfg.model.hidden) == (0.01, 1, 8, 16)
    p.write_text("train:\n  <<: {seed: 3}\n  lr: 0.1\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match=r"key 'lr' appears twice \(lines 3 and 4\)"):
        load_config(p)


def test_yaml_12_scalars_in_options_and_text_fields(tmp_path):
    """Free-form data options get numbers too (they have no type to coerce to); 017 is decimal;
    yes / no / dates stay text; an int given to a text field is its text; the saved config.yaml
    reads back the same."""
    from pase.config import save_config

    cfg = apply_overrides(Config(), ["data.options.shortcut=5e-1", "data.options.obs_noise=[3e-1,2e-1,2e-1]",
                                     "train.seed=017", "train.precision=32", "data.options.tag=no",
                                     "data.options.day=2024-01-01", "data.options.code='1e-5'"])
    assert cfg.data.options == {"shortcut": 0.5, "obs_noise": [0.3, 0.2, 0.2], "tag": "no", "day": "2024-01-01",
                                "code": "1e-5"}
    assert (cfg.train.seed, cfg.train.precision) == (17, "32")
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  options:\n    valid_fraction: 1e-1\n")
    assert load_config(p).data.options == {"valid_fraction": 0.1}
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == cfg
    with pytest.raises(ConfigError, match=r"'data.path' must be str, got float 2.5; quote it"):
        apply_overrides(Config(), ["data.path=2.5"])
    assert apply_overrides(Config(), ["train.max_epochs=1_000"]).train.max_epochs == 1000  # as YAML 1.1


def test_a_text_field_keeps_the_digits_written(tmp_path):
    """``data.path=017`` is the folder 017, not 17 (a review: the int's decimal text was taken); an
    int field still reads the number, and nothing but plain ints reaches the config."""
    from pase.config import save_config

    cfg = apply_overrides(Config(), ["data.path=017", "train.seed=017",
                                     "train.max_epochs=+5", "data.options.n=1_000", "data.options.l=[007, 8]"])
    assert cfg.data.path == "017" and apply_overrides(Config(), ["data.path=0x1F"]).data.path == "0x1F"
    assert (cfg.train.seed, cfg.train.max_epochs, cfg.data.options) == (17, 5, {"n": 1000, "l": [7, 8]})
    for v in (cfg.train.seed, cfg.train.max_epochs, cfg.data.options["n"], *cfg.data.options["l"]):
        assert type(v) is int
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  path: 0042\ntrain:\n  seed: 0042\n")
    cfg = load_config(p)
    assert (cfg.data.path, cfg.train.seed) == ("0042", 42) and type(cfg.train.seed) is int
    save_config(cfg, tmp_path / "saved.yaml")  # would fail on an int subclass
    assert load_config(tmp_path / "saved.yaml") == cfg
    with pytest.raises(ConfigError, match=r"'train.deterministic' must be bool, got int 017"):  # not "_IntText 17"
        apply_overrides(Config(), ["train.deterministic=017"])


def test_yaml_then_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("method: pase\ntrain:\n  lr: 0.01\n")
    cfg = load_config(p, ["train.lr=0.5"])
    assert cfg.method == "pase" and cfg.train.lr == 0.5 and cfg.train.batch_size == 64


def test_missing_file_and_bad_override():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/x.yaml")
    with pytest.raises(ConfigError, match="is not key=value"):
        apply_overrides(Config(), ["train.lr"])


@pytest.mark.parametrize("override, message", [
    ("train.max_epochs=0", "'train.max_epochs' must be at least 1, got 0"),
    ("train.batch_size=-2", "'train.batch_size' must be at least 1, got -2"),
    ("model.d_model=0", "'model.d_model' must be at least 1, got 0"),
    ("model.heads=0", "'model.heads' must be at least 1, got 0"),
    # these trained (SGM from epoch 0) or stopped inside numpy naming no key (review)
    ("pase.switch_max_epoch=-5", "'pase.switch_max_epoch' must be at least 0, got -5"),
    ("train.seed=-1", "'train.seed' must be at least 0, got -1"),
    ("train.seed=4294967296", "'train.seed' must be at most 4294967295, got 4294967296"),
    ("data.modalities=text", "'data.modalities' must be a list, for example [text, audio], got str 'text'"),
    ("data.modalities=[text, 1.5]", "'data.modalities[1]' must be str, got float 1.5"),
    ("train=3", "'train' is a section; set its keys (for example train.KEY=VALUE)"),
    ("train.lr.x=1", "'train.lr' is a single value, not a section; it has no keys (set it as train.lr=VALUE)"),
])
def test_values_that_cannot_work_are_named(override, message):
    with pytest.raises(ConfigError) as e:
        apply_overrides(Config(), [override])
    assert message in str(e.value)


def test_an_option_replaced_by_an_earlier_override_is_named():
    with pytest.raises(ConfigError, match=r"'data.options.fold' was set to 3 by an earlier --set; it is not a mapping"):
        apply_overrides(Config(), ["data.options.fold=3", "data.options.fold.x=1"])
    with pytest.raises(ConfigError, match=r"'data.options' was set to 3 by an earlier --set; it is not a mapping"):
        apply_overrides(Config(), ["data.options=3", "data.options.fold=1"])


@pytest.mark.parametrize("sets, message", [
    (["data.source=gcnet", "data.path=/somewhere"],
     r"^data\.path is not an option of data source 'gcnet'; it takes data\.options\.label_path, "
     r"data\.options\.feature_root, "),
    (["data.source=mmsa"], r"^data source 'mmsa' needs data\.path \(docs/data\.md\); set it in the config or "
                           r"with --set data\.path=\.\.\.$"),
    (["data.source=mmsa", "data.options.fold=1"],
     r"^data\.options\.fold is not an option of data source 'mmsa'; it takes data\.path, data\.options\.dataset, "),
    # data.path overwrote it silently (config.yaml recorded both, the run read data.path)
    (["data.source=mmsa", "data.path=/x", "data.options.path=/y"],
     r"^data\.options\.path='/y' and data\.path='/x': the data path is data\.path; drop data\.options\.path"),
    (["data.options.foo=3"], r"^data\.options\.foo is not an option of the built-in benchmark; it takes data\.options\.seed, "),
    (["data.options.sizs=[1,2,3]"],
     r"^data\.options\.sizs is not an option of the built-in benchmark; did you mean data\.options\.sizes\? "
     r"It takes data\.options\.seed, "),
    (["data.options.seed=abc"], r"^config key 'data\.options\.seed' must be int, got str 'abc'$"),
    # the closest name was offered for the generator's options only, never for seed (review)
    (["data.options.sead=1"], r"^data\.options\.sead is not an option of the built-in benchmark; did you mean "
                              r"data\.options\.seed\? "),
    (["data.source=mmsa", "data.path=/x", "data.options.datset=mosi"],
     r"^data\.options\.datset is not an option of data source 'mmsa'; did you mean data\.options\.dataset\?; it "
     r"takes data\.path, "),
    (["data.source=mmsa", "data.path=/x", "data.options.sanitize=maybe"],
     r"^config key 'data\.options\.sanitize' must be bool, got str 'maybe'$"),
    (["data.source=gcnet", "data.options.label_path=/x", "data.options.feature_root=/y", "data.options.fold=1.5"],
     r"^config key 'data\.options\.fold' must be int, got float 1\.5$"),
    # mapping and path options of another type failed inside the loader ("'int' object has no attribute
    # 'items'", "expected str, bytes or os.PathLike object, not int"; review)
    (["data.source=mmsa", "data.path=/x", "data.options.expected_dims=5"],
     r"^config key 'data\.options\.expected_dims' must be a mapping of modality to value, for example "
     r"\{audio: \.\.\.\}, got int 5$"),
    (["data.source=mmsa", "data.path=/x", "data.options.expected_dims={audio: abc}"],
     r"^config key 'data\.options\.expected_dims\.audio' must be int, got str 'abc'$"),
    (["data.source=gcnet", "data.options.label_path=/x", "data.options.features=abc"],
     r"^config key 'data\.options\.features' must be a mapping of modality to value"),
    # (an int there is the text written: test_a_loader_option_of_text_keeps_the_digits_written_on_the_command_line)
    (["data.source=gcnet", "data.options.label_path=/x", "data.options.feature_root=2.5"],
     r"^config key 'data\.options\.feature_root' must be a path, got float 2.5$"),
    (["data.source=gcnet", "data.options.label_path=2.5"],  # str | Path: types.UnionType, not typing.Union
     r"^config key 'data\.options\.label_path' must be a path, got float 2.5$"),
])
def test_an_option_the_data_source_does_not_take_is_named(sets, message):
    """Before, a raw TypeError ("load_gcnet() got an unexpected keyword argument 'path'")."""
    from pase.training.run import load_bundle

    with pytest.raises((ConfigError, ValueError), match=message):
        load_bundle(apply_overrides(Config(), sets))


def test_a_plug_in_loader_whose_type_hints_do_not_resolve_still_loads(monkeypatch):
    """The typed data.options check read the loader's hints; a loader with a TYPE_CHECKING-only
    annotation (NameError) or a functools.partial (TypeError) then failed before loading."""
    import functools

    from pase.data import create_data
    from pase.data.registry import DATA_SOURCES
    from pase.training.run import load_bundle

    def odd(seed=0, **kw):
        return create_data("synthetic", seed=seed, **kw)

    odd.__annotations__ = {"seed": "NotImportedHere"}  # a TYPE_CHECKING-only name: get_type_hints raises NameError

    for name, fn in (("odd_hints", odd), ("partial", functools.partial(odd, sizes=[16, 8, 8]))):
        monkeypatch.setitem(DATA_SOURCES._items, name, fn)
        bundle = load_bundle(apply_overrides(Config(), [f"data.source={name}", "data.options.sizes=[16,8,8]"]))
        assert len(bundle.splits["train"]) == 16


@pytest.mark.parametrize("key, value", [("ogm_rule", "paper"), ("agm_average", "mean"), ("pmr_rule", "step")])
def test_a_baseline_choice_is_checked_with_the_config(key, value):
    """An unknown choice stops when the config is read, so `pase compare` does not train the other
    methods first and fail on this one."""
    with pytest.raises(ConfigError, match=rf"baselines.{key}={value!r} is not one of"):
        apply_overrides(Config(), [f"baselines.{key}={value}"])


@pytest.mark.parametrize("override, comment", [
    ("data.path=runs/mosi #2", "#2"), ("train.lr=0.01 # note", "# note"), ("train.monitor=MAE #best", "#best"),
    ("data.options.sizes=[64, 32, 32] # small", "# small"), ("data.path=#x", "#x"),
])
def test_a_set_value_is_never_cut_at_a_yaml_comment(override, comment):
    """`--set data.path=runs/mosi #2` trained on runs/mosi (YAML dropped ' #2' as a comment; review). The
    advice quotes a text setting in YAML single quotes (double quotes read backslashes as escapes: the
    advice turned runs\\tmp into a tab) and gives a number or list setting no quoting to try."""
    key, text = override.split("=", 1)
    with pytest.raises(ConfigError) as e:
        apply_overrides(Config(), [override])
    texty = key in ("data.path", "train.monitor")
    fix = (f"quote the value to keep the text (--set \"{key}='{text}'\"), or leave the comment out" if texty else
           "leave the comment out")
    assert str(e.value) == f"override {override!r}: YAML reads {comment!r} as a comment and would drop it; {fix}"
    if texty:  # following the advice keeps the text as typed
        got = apply_overrides(Config(), [f"{key}='{text}'"])
        assert (got.data.path if key == "data.path" else got.train.monitor) == text
    back = r"data.path=runs\tmp #2"
    with pytest.raises(ConfigError, match=r"would drop it; quote the value to keep the text, or leave"):
        apply_overrides(Config(), [back])  # no example the shell would change
    assert apply_overrides(Config(), [r"data.path='runs\tmp #2'"]).data.path == "runs\\tmp #2"
    assert apply_overrides(Config(), ["data.path='runs/mosi #2'"]).data.path == "runs/mosi #2"
    assert apply_overrides(Config(), ["data.path=runs/mosi#2"]).data.path == "runs/mosi#2"  # no space: not a comment


@pytest.mark.parametrize("text, shown", [("1.50", "float 1.5"), ("true", "bool True"), ("[a, b]", "list ['a', 'b']")])
def test_the_quote_hint_repeats_the_text_written(tmp_path, text, shown):
    """The hint quoted the number YAML read: data.path=1.50 suggested '"1.5"', another folder (review)."""
    with pytest.raises(ConfigError) as e:
        apply_overrides(Config(), [f"data.path={text}"])
    assert str(e.value) == (f"config key 'data.path' must be str, got {shown}; quote it to pass the text: "
                            f"--set \"data.path='{text}'\"")
    assert apply_overrides(Config(), [f"data.path='{text}'"]).data.path == text  # the advice keeps it
    p = tmp_path / "c.yaml"  # no --set was used: no --set hint
    p.write_text("data:\n  path: 1.50\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value) == f"{p}: config key 'data.path' must be str, got float 1.5; write it in quotes to pass the " \
                           "text"


def test_a_single_value_from_the_config_file_is_not_blamed_on_a_set(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  options:\n    label_noise: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, ["data.options.label_noise.x=1"])
    assert str(e.value) == ("override 'data.options.label_noise.x=1': 'data.options.label_noise' is 0.1; it is not a "
                            "mapping, so it has no keys to set")


def test_an_unknown_key_without_a_close_match_is_one_sentence():
    with pytest.raises(ConfigError) as e:
        apply_overrides(Config(), ["zzz=1"])
    assert str(e.value) == ("unknown config key 'zzz'; valid keys under the top level: method, data, model, train, "
                            "pase, baselines")


@pytest.mark.parametrize("override, message", [
    ("train.lr=1" + "0" * 400, "config key 'train.lr' must be a finite number, got 100000000000... (401 digits)"),
    ("train.batch_size=99999999999999999999",
     "config key 'train.batch_size' must be at most 9223372036854775807, got 99999999999999999999"),
    ("model.d_model=99999999999999999999",
     "config key 'model.d_model' must be at most 9223372036854775807, got 99999999999999999999"),
])
def test_a_huge_number_is_named_with_its_key(override, message):
    """Before: 'int too large to convert to float', islice's or torch's overflow, naming no key (review)."""
    with pytest.raises(ConfigError) as e:
        apply_overrides(Config(), [override])
    assert str(e.value) == message
    assert apply_overrides(Config(), ["train.max_epochs=9223372036854775807"]).train.max_epochs == 2**63 - 1


@pytest.mark.parametrize("text", ["[]\n", "false\n", "0\n", "''\n"])
def test_a_config_file_that_is_not_a_mapping_is_refused(tmp_path, text):
    """`[]`, `false`, `0` or `""` trained the defaults without a word (review); an empty file (or
    one of comments) is still the defaults, and so is an `options:` left empty."""
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value).startswith(f"{p}: config section top level must be a mapping of its keys, got ")
    p.write_text("# nothing yet\n")
    assert load_config(p) == Config()
    p.write_text("data:\n  options:\n    # seed: 1\n")  # was: 'data.options' must be a mapping, got NoneType None
    assert load_config(p).data.options == {}


@pytest.mark.parametrize("key, value", [("ot_solver", "foo"), ("ot_gradient", "exact"), ("gate_inputs", "entropy"),
                                        ("shapley_utility", "acc"), ("sgm_target", "lr"), ("binning", "round5")])
def test_a_pase_choice_is_checked_with_the_config(key, value, tmp_path):
    """`pase compare --set pase.ot_solver=foo` trained every other method, then failed each PaSE
    run (review): a config built for PaSE refuses it, and compare builds every method's before it
    trains. Another method's config keeps loading (runs saved with such a value before the check
    could no longer be evaluated or resumed: a review of the check)."""
    from pase.config import PASE_CHOICES
    from pase.evaluation.compare import compare

    with pytest.raises(ConfigError) as e:
        apply_overrides(Config(), ["method=pase", f"pase.{key}={value}"])
    assert str(e.value) == f"pase.{key}={value!r} is not one of {', '.join(PASE_CHOICES[key])}"
    for choice in PASE_CHOICES[key]:
        assert getattr(apply_overrides(Config(), ["method=pase", f"pase.{key}={choice}"]).pase, key) == choice
    if key == "shapley_utility":  # every method reads it: refused for late fusion too (the next test)
        return
    assert getattr(apply_overrides(Config(), [f"pase.{key}={value}"]).pase, key) == value  # late fusion's
    with pytest.raises(ConfigError, match=rf"pase.{key}={value!r} is not one of"):
        compare(apply_overrides(Config(), [f"pase.{key}={value}"]), ["late_fusion", "pase"], [1111], tmp_path / "c")
    assert not (tmp_path / "c" / "runs").exists()  # nothing trained


@pytest.mark.parametrize("method", ["late_fusion", "ogm_ge", "agm", "pmr"])
def test_the_pase_choices_other_methods_read_are_checked_for_them(method, tmp_path):
    """pase.binning is PMR's binning and pase.shapley_utility every method's Shapley utility, but the
    choices were checked for PaSE only: `pase compare --methods late_fusion,pmr --set pase.binning=sgn`
    trained late fusion, then PMR failed at model build (review). Configs holding any binning still load
    for every method but PaSE (PMR reads it for regression labels only, and a classification run's saved
    config must load: a review); `pase compare` refuses a bad one for PMR before anything trains."""
    from pase.config import PASE_CHOICES
    from pase.evaluation.compare import compare

    with pytest.raises(ConfigError) as e:
        apply_overrides(Config(), [f"method={method}", "pase.shapley_utility=acc"])
    assert str(e.value) == f"pase.shapley_utility='acc' is not one of {', '.join(PASE_CHOICES['shapley_utility'])}"
    assert apply_overrides(Config(), [f"method={method}", "pase.binning=sgn"]).pase.binning == "sgn"
    if method != "pmr":
        return
    with pytest.raises(ConfigError, match=r"pase.binning='sgn' is not one of .*\(method pmr bins its labels"):
        compare(apply_overrides(Config(), ["pase.binning=sgn"]), ["late_fusion", "pmr"], [1111], tmp_path / "c")
    assert not (tmp_path / "c" / "runs").exists()  # late fusion did not train first


def test_the_pase_choices_are_the_methods_own():
    from pase.config import PASE_CHOICES
    from pase.fusion import GateScorer
    from pase.methods.base import UTILITIES
    from pase.prototypes import BINNINGS

    assert PASE_CHOICES["gate_inputs"] == GateScorer.INPUTS and PASE_CHOICES["shapley_utility"] == UTILITIES
    assert set(PASE_CHOICES["binning"]) == set(BINNINGS)


@pytest.mark.parametrize("sets, message", [
    # Python's shuffle seeds with abs(): -1 gave valid_seed 1's validation videos, silently (review)
    (["data.source=mosi_bclstm", "data.path=/nonexistent", "data.options.valid_seed=-1"],
     "valid_seed=-1 (data.options.valid_seed) must be at least 0; Python's shuffle takes it as 1, so it would repeat "
     "that seed's validation videos"),
    # numpy's bare "expected non-negative integer" (review)
    (["data.source=gcnet", "data.options.label_path=/nonexistent.pkl", "data.options.seed=-1"],
     "seed=-1 (data.options.seed) must be at least 0 (numpy's seed range)"),
    # torch's bare "Overflow when unpacking long long" (review)
    (["data.options.seed=99999999999999999999"],
     "data.options.seed=99999999999999999999 is outside the seed range (0 to 18446744073709551615)"),
    # torch takes 2^64 + seed below 0: -1 was the data of 2^64 - 1 under another name (a review)
    (["data.options.seed=-1"], "data.options.seed=-1 is outside the seed range (0 to 18446744073709551615)"),
    # a list inside the list: the loader's own line, not Python's bare "unhashable type: 'list'" (a review)
    (["data.options.modalities=[[text], [text]]"],
     "synthetic option 'modalities' must be a list of names (one per modality), for example the default [text, "
     "audio, vision]; got [['text'], ['text']]"),
    # a torch shape error (synthetic), a one-modality run that config.yaml recorded as [text, text] (mosi_bclstm)
    (["data.options.modalities=[a, a, b]"],
     "config key 'data.options.modalities' names 'a' twice; name each modality once"),
    (["data.source=mosi_bclstm", "data.path=/nonexistent", "data.options.modalities=[text, text]"],
     "config key 'data.options.modalities' names 'text' twice; name each modality once"),
])
def test_a_data_option_outside_its_range_is_named(sets, message):
    from pase.training.run import load_bundle

    with pytest.raises(ValueError) as e:
        load_bundle(apply_overrides(Config(), sets))
    assert str(e.value) == message


def test_a_config_at_a_tilde_path_is_in_the_home_folder(tmp_path, monkeypatch):
    """save_config / load_config / config_difference called from Python took a leading `~` literally, where
    train / compare / evaluate expand it (pase.io.user_path): save_config wrote into a folder named ~ under
    the working directory, and load_config found no file (a review)."""
    from pase.config import config_difference, save_config

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    cfg = apply_overrides(Config(), ["method=pase", "train.max_epochs=7"])
    save_config(cfg, "~/run/config.yaml")
    assert from_dict(yaml.safe_load((home / "run" / "config.yaml").read_text())) == cfg
    assert load_config("~/run/config.yaml", ["train.lr=0.01"]) == apply_overrides(cfg, ["train.lr=0.01"])
    assert config_difference("~/run/config.yaml", cfg) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # no folder named ~


def test_a_loader_option_of_text_keeps_the_digits_written_on_the_command_line(tmp_path, monkeypatch):
    """``--set data.options.label_path=007`` was the int 7, refused as "must be a path, got int 7", and GCNet's
    feature folder ``features.text=017`` was looked up as 17; quoting worked. An option the source's loader
    takes as text (a path or a name, from its signature) keeps what was written, as a text config key does;
    an int option (``seed``) still reads the number, and the saved config.yaml reads back the same."""
    import shutil
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent / "data"))
    from writers import write_gcnet

    from pase.cli import _parser
    from pase.config import save_config
    from pase.training.run import load_bundle

    label = write_gcnet(tmp_path / "d", "mosi")
    shutil.copy(label, tmp_path / "007")
    shutil.copytree(label.parent / "features", tmp_path / "010")
    (tmp_path / "010" / "deberta-large-4-UTT").rename(tmp_path / "010" / "017")
    monkeypatch.chdir(tmp_path)
    sets = ["data.source=gcnet", "data.options.label_path=007", "data.options.feature_root=010",
            "data.options.features.text=017", "data.options.dataset=mosi", "data.options.seed=07"]
    args = _parser().parse_args(["train"] + [x for s in sets for x in ("--set", s)])
    cfg = load_config(args.config, args.set)  # as pase train reads them
    assert cfg.data.options == {"label_path": "007", "feature_root": "010", "features": {"text": "017"},
                                "dataset": "mosi", "seed": 7}
    assert type(cfg.data.options["seed"]) is int
    bundle = load_bundle(cfg)  # the files named 007 and 010/017 are the ones read
    assert bundle.info["file"] == "007" and bundle.info["features"]["text"] == "017"
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == cfg


def test_a_set_value_may_hold_an_equals_sign():
    """Only the first '=' separates the key: a path (or option text) holding '=' is kept whole."""
    assert apply_overrides(Config(), ["data.path=runs/lr=0.1/data"]).data.path == "runs/lr=0.1/data"


def test_the_quote_hint_doubles_a_single_quote_in_the_text():
    """In a YAML single-quoted scalar a ' is written ''; the hint's command must give back the text."""
    with pytest.raises(ConfigError) as e:
        apply_overrides(Config(), ["data.path=[it's]"])
    hint = str(e.value).split("quote it to pass the text: ")[1]
    assert hint == "--set \"data.path='[it''s]'\""
    assert apply_overrides(Config(), ["data.path='[it''s]'"]).data.path == "[it's]"  # the hint's value, unquoted


def test_float16_weights_are_refused_with_adamw_as_with_adam():
    """AdamW's eps (1e-8) is 0 in float16 too: 16-true with either Adam refuses, with SGD it loads."""
    with pytest.raises(ConfigError, match=r"train.precision=16-true with train.optimizer=adamw: Adam's eps"):
        apply_overrides(Config(), ["train.precision=16-true", "train.optimizer=adamw"])
    assert apply_overrides(Config(), ["train.precision=16-true", "train.optimizer=sgd"]).train.precision == "16-true"


def test_a_key_only_the_new_configuration_has_is_a_difference():
    """A key that the saved configuration lacks (an option added by --set) is a difference too."""
    from pase.config import first_difference

    assert first_difference({"a": 1}, {"a": 1, "b": {"c": 2}}) == "b: None there, {'c': 2} now"
    assert first_difference({"a": 1, "b": 2}, {"a": 1}) == "b: 2 there, None now"


def test_the_documented_training_and_switch_defaults():
    """docs/method.md: the switch after pase.switch_patience 3 stale epochs or at epoch 30, early
    stopping after 10 (train.early_stop_patience); train.lr 1e-3 for encoders trained from scratch."""
    cfg = Config()
    assert (cfg.pase.switch_patience, cfg.pase.switch_max_epoch) == (3, 30)
    assert (cfg.train.early_stop_patience, cfg.train.lr) == (10, 1e-3)


def test_the_closed_ends_of_documented_ranges_are_accepted():
    """pase.sgm_min_coeff lies in [0, 1] (1: no modulation); pase.switch_patience=0 switches after
    epoch 0 (docs/method.md)."""
    cfg = apply_overrides(Config(), ["pase.sgm_min_coeff=1", "pase.switch_patience=0"])
    assert (cfg.pase.sgm_min_coeff, cfg.pase.switch_patience) == (1.0, 0)
