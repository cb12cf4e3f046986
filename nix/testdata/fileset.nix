# A stand-in for nixpkgs' lib.fileset, builtins only, so TestPackageBuild
# can compute nix/package.nix's source offline. It keeps the semantics of
# nixpkgs lib/fileset (nixos-25.11; default.nix for the API, internal.nix
# for the work), with a file set as the sorted list of its files' absolute
# paths instead of nixpkgs' tree of readDir types:
#   - a path is coerced to every file under it, and one that does not exist
#     is an error ("… is a path that does not exist"; internal.nix
#     _coerce); maybeMissing turns that into the empty set;
#   - a directory's files are what readDir finds, recursively, of any type
#     but "directory" (internal.nix _create / _directoryEntries);
#   - fileFilter calls its predicate with { name, type, hasExt } for every
#     file under a directory, hasExt = ext: hasSuffix ".${ext}" name
#     (internal.nix _fileFilter), and refuses a path that is not a folder;
#   - unions and difference are set union and difference of files;
#   - toSource { root, fileset } holds exactly the fileset's files, and
#     refuses a file outside root (default.nix toSource). Here it returns
#     their paths relative to root instead of copying them to the store.
let
  mk = files: {
    _type = "fileset";
    files = builtins.sort builtins.lessThan (unique files);
  };
  unique = builtins.foldl' (acc: f: if builtins.elem f acc then acc else acc ++ [ f ]) [ ];

  walk =
    pred: dir:
    let
      entries = builtins.readDir dir;
    in
    builtins.concatLists (
      map (
        name:
        let
          type = entries.${name};
        in
        if type == "directory" then
          walk pred (dir + "/${name}")
        else if pred name type then
          [ "${toString dir}/${name}" ]
        else
          [ ]
      ) (builtins.attrNames entries)
    );

  # builtins.readFileType is Nix 2.14; this is nixpkgs lib.filesystem.pathType
  # for older Nix.
  pathType = path: (builtins.readDir (dirOf path)).${baseNameOf path};

  coerce =
    context: value:
    if builtins.isAttrs value && value._type or null == "fileset" then
      value
    else if !builtins.isPath value then
      throw "lib.fileset.${context}: ${builtins.typeOf value} is not a file set or a path"
    else if !builtins.pathExists value then
      throw "lib.fileset.${context}: ${toString value} is a path that does not exist. To create a file set from a path that may not exist, use `lib.fileset.maybeMissing`."
    else if pathType value == "directory" then
      mk (walk (_: _: true) value)
    else
      mk [ (toString value) ];
in
{
  unions = list: mk (builtins.concatLists (map (v: (coerce "unions" v).files) list));

  union = a: b: mk ((coerce "union" a).files ++ (coerce "union" b).files);

  difference =
    a: b:
    let
      remove = (coerce "difference" b).files;
    in
    mk (builtins.filter (f: !builtins.elem f remove) (coerce "difference" a).files);

  maybeMissing = path: if builtins.pathExists path then coerce "maybeMissing" path else mk [ ];

  fileFilter =
    predicate: path:
    if pathType path != "directory" then
      throw "lib.fileset.fileFilter: ${toString path} is not a directory"
    else
      mk (
        walk (
          name: type:
          predicate {
            inherit name type;
            # nixpkgs lib/strings.nix hasSuffix
            hasExt =
              ext:
              let
                start = builtins.stringLength name - builtins.stringLength ".${ext}";
              in
              start >= 0 && builtins.substring start (-1) name == ".${ext}";
          }
        ) path
      );

  toSource =
    { root, fileset }:
    let
      prefix = "${toString root}/";
      n = builtins.stringLength prefix;
      rel =
        f:
        if builtins.substring 0 n f == prefix then
          builtins.substring n (-1) f
        else
          throw "lib.fileset.toSource: ${f} is not under root ${toString root}";
    in
    {
      _type = "source";
      files = map rel (coerce "toSource" fileset).files;
    };
}
