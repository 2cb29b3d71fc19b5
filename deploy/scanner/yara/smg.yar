/*
 * The gateway's own YARA rules, run by smg-scanner on every decoded MIME part.
 *
 * External variables set per part by the scanner:
 *   filename      the part's file name (Content-Disposition filename / Content-Type name), "" if none
 *   content_type  the part's lower-cased type/subtype
 *
 * Every rule that matches blocks the message; its name is the signature in `scanned.infected`.
 * Add site rules in a separate file and point scanner.yara.rules at a file that includes both.
 */

rule SMG_EICAR_Test_File
{
    meta:
        description = "EICAR anti-virus test file"
    strings:
        // X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*
        $eicar = { 58 35 4F 21 50 25 40 41 50 5B 34 5C 50 5A 58 35 34 28 50 5E 29 37 43 43 29 37 7D 24
                   45 49 43 41 52 2D 53 54 41 4E 44 41 52 44 2D 41 4E 54 49 56 49 52 55 53 2D 54 45 53
                   54 2D 46 49 4C 45 21 24 48 2B 48 2A }
    condition:
        $eicar
}

rule SMG_Executable_Attachment
{
    meta:
        description = "Windows (PE) or ELF executable in an attachment"
    condition:
        (uint16(0) == 0x5A4D and uint32(0x3C) < filesize and uint32(uint32(0x3C)) == 0x00004550)
        or uint32(0) == 0x464C457F
}

rule SMG_Executable_Or_Script_Filename
{
    meta:
        description = "attachment named like an executable or script"
    condition:
        filename matches /\.(exe|scr|com|pif|cpl|msi|msp|dll|bat|cmd|vbs|vbe|js|jse|wsf|wsh|ws|ps1|psm1|hta|lnk|jar|reg|sct|inf|iso|img|vhd|vhdx|appx|appxbundle|msix)$/is
}

rule SMG_Script_Content
{
    meta:
        description = "script with a shebang or Windows script host markers in an attachment"
    strings:
        $shebang = /^#![ ]?\/(usr\/)?(local\/)?bin\/(env )?(ba|z|k|c|tc|da)?sh/
        $wscript = "WScript.Shell" nocase
        $powershell = /powershell(\.exe)?\s+(-\w+\s+)*-(e|enc|encodedcommand|nop|noprofile|w hidden|windowstyle)/ nocase
    condition:
        filename != "" and ($shebang at 0 or $wscript or $powershell)
}

rule SMG_Office_Macro_Filename
{
    meta:
        description = "macro-enabled Office document (by name)"
    condition:
        filename matches /\.(docm|dotm|xlsm|xltm|xlam|xlsb|pptm|potm|ppam|ppsm|sldm)$/is
}

rule SMG_Office_Macro_Content
{
    meta:
        description = "Office document with a VBA macro project"
    strings:
        $ole_vba = "_VBA_PROJECT" wide ascii
        $ole_dir = "VBA" wide
        $ooxml_vba = "vbaProject.bin"
        $macro_ct = "application/vnd.ms-office.vbaProject"
    condition:
        (uint32(0) == 0xE011CFD0 and uint32(4) == 0xE11AB1A1 and ($ole_vba or $ole_dir))
        or (uint32(0) == 0x04034B50 and ($ooxml_vba or $macro_ct))
        or content_type matches /macroenabled/i
}

rule SMG_Double_Extension
{
    meta:
        description = "file name with a harmless-looking extension followed by an executable one"
    condition:
        filename matches /\.(pdf|docx?|xlsx?|pptx?|txt|rtf|jpe?g|png|gif|bmp|zip|rar|7z|html?|csv|mp3|mp4|avi)[ _]*\.(exe|scr|com|pif|bat|cmd|vbs|js|jse|wsf|hta|lnk|ps1|jar|msi)$/is
}

rule SMG_Zip_Bomb_Ratio
{
    meta:
        description = "zip member that expands more than 100-fold to over 100 MB (a flat zip bomb)"
    strings:
        $local = { 50 4B 03 04 }
    condition:
        uint32(0) == 0x04034B50 and
        for any i in (1..#local) : (
            uint32(@local[i] + 22) > 104857600 and uint32(@local[i] + 22) != 0xFFFFFFFF and
            uint32(@local[i] + 22) \ 100 > uint32(@local[i] + 18)
        )
}
