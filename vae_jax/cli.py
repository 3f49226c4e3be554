"""What every command-line entry point shares: quiet logs, one-line errors.

An entry point with a config flag uses this module's two wrappers:

  _CONFIG = cli.define_config_file("config", _DEFAULT_CONFIG, "Config file")
  ...
  cli.run(main)          # instead of absl's app.run(main)

Then every mistake on the command line (a misspelt --config.<field>, a
parameter string without `=`, a config file that is missing, does not
parse or has no get_config, a value of the wrong type, an unknown flag)
ends in one `error:` line and exit status 2 before any work, and `--help`
lists the flags and every config field with its value and meaning, exit 0.
"""

import ast
import difflib
import functools
import importlib.util
import io
import logging as pylogging
import os
import re
import signal
import sys
import tokenize

from absl import app
from absl import flags
from absl import logging

# absl's help flags (they exit 1 when absl handles them); `run` answers them.
_HELP_ARGS = ("-h", "-help", "--help", "-?", "-helpshort", "--helpshort",
              "-helpfull", "--helpfull")


class _QuietLibraries(pylogging.Filter):
  """Drops the INFO chatter of orbax and of jax's backend probing."""

  def filter(self, record):
    noisy = any(name in record.pathname for name in (
        "orbax", "xla_bridge", "jax_array_handlers"))
    return record.levelno > pylogging.INFO or not noisy


def quiet_library_logs():
  """Keeps the log to this package's own lines (and libraries' warnings)."""
  logging.get_absl_handler().addFilter(_QuietLibraries())


def fail(message):
  """One `error:` line on stderr and exit status 2; nothing else is touched."""
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def reject_extra_args(argv):
  """absl passes positional leftovers through; commands take none."""
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")


# ---- the command line's config: checked before config_flags sees it ----


def _flag_args(argv):
  """The arguments before a bare `--` (absl leaves the rest to main)."""
  args = list(argv[1:])
  return args[:args.index("--")] if "--" in args else args


def config_argument(argv, name, default):
  """The value of --<name> on a command line (the last one), or `default`."""
  value = default
  args = _flag_args(argv)
  for i, arg in enumerate(args):
    match = re.match(rf"^--?{re.escape(name)}(=(.*))?$", arg)
    if match and match.group(1) is not None:
      value = match.group(2)
    elif match and i + 1 < len(args):
      value = args[i + 1]
  return value


def _load_config(name, value):
  """Loads a config the way ml_collections' config_flags does.

  Args:
    name: the flag's name, for messages.
    value: "path" or "path:parameter string".

  Returns:
    (config, path).

  Raises:
    ValueError: one line naming the flag and what is wrong.
  """
  path, sep, params = value.partition(":")
  if not os.path.isfile(path):
    raise ValueError(f"--{name}: no such config file: {path}")
  try:
    source = open(path, encoding="utf-8").read()
    compile(source, path, "exec")
  except SyntaxError as e:
    raise ValueError(f"--{name}: {path}, line {e.lineno}: syntax error: "
                     f"{e.msg}") from None
  except (OSError, UnicodeDecodeError) as e:
    raise ValueError(f"--{name}: cannot read {path}: {e}") from None
  spec = importlib.util.spec_from_file_location("_cli_config_check", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"--{name}: loading {path} failed: {_one_line(e)}"
                     ) from None
  if not callable(getattr(module, "get_config", None)):
    raise ValueError(f"--{name}: {path} defines no get_config()")
  try:
    config = module.get_config(*([params] if sep else []))
  except Exception as e:  # pylint: disable=broad-except
    # A parameter string's mistakes surface here (apply_overrides raises
    # ValueError naming the item).
    raise ValueError(f"--{name}={value}: {_one_line(e, with_type=False)}"
                     ) from None
  return config, path


def _one_line(e, with_type=True):
  text = str(e).strip().splitlines()[0] if str(e).strip() else ""
  if isinstance(e, KeyError) and text.startswith(("'", '"')):
    text = text.strip("'\"")
  if not with_type and text:
    return text
  return f"{type(e).__name__}: {text}" if text else type(e).__name__


def config_fields(config, prefix=""):
  """{dotted field name: value} for every leaf of a ConfigDict, in order."""
  out = {}
  for key, value in config.items():
    if hasattr(value, "items") and not isinstance(value, dict):
      out.update(config_fields(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def suggest(name, candidates):
  """The candidate closest to a misspelt dotted field name, or None."""
  close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
  if not close:  # a misspelt leaf under the right parent: compare leaves.
    leaf = name.rsplit(".", 1)[-1]
    by_leaf = {c.rsplit(".", 1)[-1]: c for c in candidates}
    close = [by_leaf[m] for m in difflib.get_close_matches(
        leaf, list(by_leaf), n=1, cutoff=0.6)]
  return close[0] if close else None


def _check_overrides(argv, name, config, path):
  """Raises ValueError for a --<name>.<field> that names no config field."""
  fields = config_fields(config)
  groups = {f.rsplit(".", 1)[0] for f in fields if "." in f}
  for arg in _flag_args(argv):
    match = re.match(rf"^--?(no)?{re.escape(name)}\.([^=]+)", arg)
    if not match or "[" in match.group(2):
      continue  # config_flags' index syntax (a.b[0]) is left to it.
    field = match.group(2)
    if field in fields or field in groups:
      continue
    hint = suggest(field, list(fields))
    raise ValueError(
        f"--{name}.{field}: not a field of the config {path}" +
        (f"; did you mean --{name}.{hint}?" if hint else
         "; --help lists the fields"))


def check_config_args(argv, name, default):
  """Checks the config a command line asks for, before config_flags does.

  config_flags reports these as tracebacks of 12-56 lines (some only when
  the config is first used); here each is one line.

  Args:
    argv: the command line.
    name: the config flag's name ("config").
    default: the flag's default config path.

  Returns:
    None, or one line saying what is wrong, naming the flag or field.
  """
  value = config_argument(argv, name, default)
  if value is None:
    return None  # no default and none given: the command's main says so.
  try:
    config, path = _load_config(name, value)
    _check_overrides(argv, name, config, path)
  except ValueError as e:
    return str(e)
  return None


def define_config_file(name, default, help_string, **kwargs):
  """config_flags.DEFINE_config_file, with one-line errors.

  config_flags parses the default config, with any --<name>.<field>
  overrides from sys.argv, when the flag is defined (at import), so the
  command line is checked here first.
  """
  from ml_collections import config_flags
  message = check_config_args(sys.argv, name, default)
  if message:
    fail(message)
  try:
    return config_flags.DEFINE_config_file(name, default, help_string,
                                           **kwargs)
  except Exception as e:  # pylint: disable=broad-except
    fail(f"--{name}: {_one_line(_root_cause(e))}")


def _root_cause(e):
  while e.__cause__ is not None or (e.__context__ is not None and
                                    not e.__suppress_context__):
    e = e.__cause__ or e.__context__
  return e


def _flag_error_line(e, config_flag):
  """One line for an error absl or config_flags raised while parsing."""
  if isinstance(e, flags.Error):
    text = str(e).strip().splitlines()[0]
    match = re.match(r"^flag (--\S+?)=(.*?): (.*)$", text)
    if match:
      flag, value, reason = match.groups()
      if "Error whilst parsing config file" in reason:
        return f"{flag}={value}: {_one_line(_root_cause(e))}"
      expected = _expected_type(flag, config_flag)
      return f"{flag}={value}: {expected}{reason}"
    match = re.match(r"^Unknown command line flag '([^']+)'", text)
    if match:
      known = [n for n in flags.FLAGS
               if not (config_flag and n.startswith(config_flag + "."))]
      hint = suggest(match.group(1), known)
      return (f"unknown flag --{match.group(1)}" +
              (f"; did you mean --{hint}?" if hint else ""))
    return text
  return _one_line(_root_cause(e))


def _expected_type(flag, config_flag):
  """'latent_dim expects int like 8: ' for --config.latent_dim, else ''."""
  prefix = f"--{config_flag}."
  if (not config_flag or config_flag not in flags.FLAGS or
      not flag.startswith(prefix)):
    return ""
  field = flag[len(prefix):]
  try:
    value = config_fields(flags.FLAGS[config_flag].value).get(field)
  except Exception:  # pylint: disable=broad-except
    return ""
  if value is None:
    return ""
  return f"{field} expects {type(value).__name__} like {value!r}: "


# ---- --help: flags, then every config field with its value and meaning ----


def _assignments(path, function=None):
  """[(line, dotted field, comment or "")] for each `x.a.b = ...` of a file.

  The root name (`c`, `b`, ...) is dropped: vae_jax/config_base.py's
  `c.latent_dim = 16  # L, dimensions of z.` gives (…, "latent_dim", "L,
  dimensions of z."). The comment on the statement's last line counts,
  else the one on its first. Also [(line, title)] of section comments
  ("# ---- data ----").
  """
  try:
    source = open(path, encoding="utf-8").read()
    tree = ast.parse(source)
  except (OSError, SyntaxError, UnicodeDecodeError):
    return [], []
  comments, sections = {}, []
  for tok in tokenize.generate_tokens(io.StringIO(source).readline):
    if tok.type == tokenize.COMMENT:
      text = tok.string.lstrip("#").strip()
      comments[tok.start[0]] = text
      if tok.line.strip().startswith("#") and text.startswith("--"):
        sections.append((tok.start[0], text.strip("- ")))
  if function is not None:
    bodies = [n for n in tree.body if isinstance(n, ast.FunctionDef) and
              n.name == function]
    tree = ast.Module(body=bodies, type_ignores=[])
  found = []
  for node in ast.walk(tree):
    if not isinstance(node, (ast.Assign, ast.AnnAssign)):
      continue
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    for target in targets:
      parts = []
      while isinstance(target, ast.Attribute):
        parts.append(target.attr)
        target = target.value
      if parts and isinstance(target, ast.Name):
        text = comments.get(node.end_lineno) or comments.get(node.lineno, "")
        found.append((node.lineno, ".".join(reversed(parts)), text))
  return sorted(found), sections


def field_comments(path, function=None):
  """{dotted field: comment} of a config file.

  Args:
    path: a Python file.
    function: only assignments inside this top-level function's body (a
      config's presets and helpers set the same fields for other cases).
  """
  found, _ = _assignments(path, function)
  out = {}
  for _, field, text in found:
    if text:
      out.setdefault(field, text)
  return out


def _lookup(field, table):
  """table[field], or table of its tail (a sweep's base.latent_dim means
  what latent_dim means); None when absent."""
  parts = field.split(".")
  for i in range(len(parts)):
    tail = ".".join(parts[i:])
    if tail in table:
      return table[tail]
  return None


def _common_config_path():
  """vae_jax/config_base.py, where every runner field is defined and
  explained."""
  from vae_jax import config_base  # pylint: disable=g-import-not-at-top
  return config_base.__file__


def config_help(config, path, name="config", common_path=None):
  """The config part of --help: one line per field, in vae_jax/config_base.py's
  order and sections.

  Args:
    config: the loaded ConfigDict (after the command line's overrides).
    path: its config file; its own comment on a field follows the common
      meaning in brackets.
    name: the config flag's name.
    common_path: file whose comments give each field's meaning; default
      vae_jax/config_base.py.

  Returns:
    text: "  field  value  meaning [file: its comment]" lines.
  """
  common_path = common_path or _common_config_path()
  found, sections = _assignments(common_path)
  common = field_comments(common_path)
  line_of = {}
  for line, field, _ in found:
    line_of.setdefault(field, line)
  own = field_comments(path, "get_config") if path and os.path.abspath(
      path) != os.path.abspath(common_path) else {}
  fields = config_fields(config)

  def group(field):  # "" for common.py's own fields, else the prefix.
    if field in line_of:
      return ""
    return field.split(".")[0] if "." in field else "~"
  # Each group (runner fields, then a sweep's base.*, grid.*, ...) in
  # common.py's order; fields common.py does not know last.
  ordered = sorted(fields, key=lambda f: (
      group(f) != "", group(f), _lookup(f, line_of) is None,
      _lookup(f, line_of) or 0, f))
  width = max((len(f) for f in fields), default=0)
  lines = [f"config fields of {path} (set one with --{name}.<field>=value, "
           f"or several with --{name}={path}:field=value,...):"]
  current, pending = None, []
  for field in ordered:
    if group(field) != current:
      current, pending = group(field), list(sections)
    line = _lookup(field, line_of)
    passed = [t for l, t in pending if line is not None and l < line]
    if passed:
      pending, title = pending[len(passed):], passed[-1]
      lines.append(f" {current + '.* ' if current not in ('', '~') else ''}"
                   f"{title}:")
    meaning = _lookup(field, common) or ""
    note = own.get(field)
    if note and note != meaning:
      meaning = (f"{meaning} [{os.path.basename(path)}: {note}]" if meaning
                 else note)
    lines.append(f"  {field:<{width}}  {fields[field]!r:<12}  "
                 f"{meaning}".rstrip())
  return "\n".join(lines)


def _help_text(config_flag, full):
  main = sys.modules.get("__main__")
  parts = [(getattr(main, "__doc__", None) or "").strip()]
  listed = (flags.FLAGS.get_help() if full else
            flags.FLAGS.main_module_help()).strip()
  if config_flag and config_flag in flags.FLAGS:
    from ml_collections import config_flags
    flag = flags.FLAGS[config_flag]
    if f"--{config_flag}:" not in listed:
      # define_config_file defines it from this module, so absl does not
      # count it among the main module's flags.
      listed += (f"\n  --{config_flag}: {flag.help}\n    (default: "
                 f"'{_default_path(flag)}')")
  parts.append("flags:\n" + listed)
  if config_flag and config_flag in flags.FLAGS and flag.value is not None:
    path = config_flags.get_config_filename(flag)
    # A runner or sweep config takes the meanings of config_base's fields;
    # any other (the gradient-variance experiment's) only its own comments.
    parts.append(config_help(flag.value, path, config_flag,
                             None if _is_runner_config(flag.value) else path))
  return "\n\n".join(p for p in parts if p)


def _is_runner_config(config):
  """True for a runner config (all of config_base's fields) or a sweep's."""
  from vae_jax import config_base  # pylint: disable=g-import-not-at-top
  fields = set(config_fields(config))
  return (set(config_fields(config_base.base_config())) <= fields or
          any(f.startswith("base.") for f in fields))


def _default_path(flag):
  """A config flag's default file (its `default` may be the parsed config)."""
  if isinstance(flag.default, str):
    return flag.default
  if flag.default is None:
    return None
  return str(flag.default_as_str).strip("'")


def parse_flags(argv, config_flag="config"):
  """absl's flags parser with one `error:` line and a --help that exits 0.

  Returns:
    the arguments absl leaves to main (program name first).
  """
  args = _flag_args(argv)
  helping = [a for a in args if a in _HELP_ARGS]
  if helping:
    argv = [a for i, a in enumerate(argv)
            if i == 0 or a not in _HELP_ARGS or i > len(args)]
  if config_flag and config_flag in flags.FLAGS:
    message = check_config_args(argv, config_flag,
                                _default_path(flags.FLAGS[config_flag]))
    if message:
      fail(message)
  try:
    rest = flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    # A required flag left out fails absl's validators, which run after
    # parsing: --help still helps.
    if not (helping and isinstance(e, flags.IllegalFlagValueError)
            and flags.FLAGS.is_parsed()):
      fail(_flag_error_line(e, config_flag))
    rest = argv[:1]
  if helping:
    try:
      print(_help_text(config_flag, full=any("full" in a for a in helping)))
      sys.stdout.flush()
    except BrokenPipeError:  # `--help | head`: the reader has what it wants.
      os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except Exception as e:  # pylint: disable=broad-except
      fail(_one_line(_root_cause(e)))
    sys.exit(0)
  return rest


def run(main, config_flag="config"):
  """absl's app.run(main), parsing flags with `parse_flags`.

  Args:
    main: the entry point's main(argv).
    config_flag: name of its config_flags flag, or None when it has none.
  """
  try:
    app.run(main, flags_parser=functools.partial(parse_flags,
                                                 config_flag=config_flag))
  except KeyboardInterrupt as e:
    # One line, not a traceback through jax. A training run's checkpoints
    # are whole steps or set aside on restart: rerunning resumes it.
    signum = getattr(e, "signum", signal.SIGINT)
    print("interrupted" if signum == signal.SIGINT else "terminated",
          file=sys.stderr)
    sys.exit(128 + signum)
